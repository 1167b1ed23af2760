//! calicoctl-style tables: upper-case headers, columns padded with three spaces.
//!
//! Cells are read from each resource's JSON form by JSON pointer, so that a table shows exactly
//! what `-o json` would (defaults included).

use calyx_datastore::resources::Kind;
use serde_json::Value;

/// How to fill one cell from a resource's JSON.
type Cell = fn(&Value) -> String;

/// One column: its header and how to fill it.
struct Column {
    header: &'static str,
    cell: Cell,
}

/// The text at `pointer`, or empty.
fn text(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The number of rules in the list at `pointer` (calicoctl's `{{ len .Spec.ExportV4 }}`: 0
/// when absent).
fn rule_count(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
        .to_string()
}

/// A boolean at `pointer` as calicoctl shows it (`false` when unset).
fn flag(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

/// A mode at `pointer`, `Never` when unset.
fn mode(v: &Value, pointer: &str) -> String {
    match text(v, pointer) {
        s if s.is_empty() => "Never".into(),
        s => s,
    }
}

fn columns(kind: Kind, wide: bool) -> Vec<Column> {
    let c = |header, cell| Column { header, cell };
    match (kind, wide) {
        (Kind::IPPool, false) => vec![
            c("NAME", |v| text(v, "/metadata/name")),
            c("CIDR", |v| text(v, "/spec/cidr")),
            c("SELECTOR", |v| text(v, "/spec/nodeSelector")),
        ],
        (Kind::IPPool, true) => vec![
            c("NAME", |v| text(v, "/metadata/name")),
            c("CIDR", |v| text(v, "/spec/cidr")),
            c("NAT", |v| flag(v, "/spec/natOutgoing")),
            c("IPIPMODE", |v| mode(v, "/spec/ipipMode")),
            c("VXLANMODE", |v| mode(v, "/spec/vxlanMode")),
            c("DISABLED", |v| flag(v, "/spec/disabled")),
            c("DISABLEBGPEXPORT", |v| flag(v, "/spec/disableBGPExport")),
            c("SELECTOR", |v| text(v, "/spec/nodeSelector")),
        ],
        (Kind::BGPPeer, false) => vec![
            c("NAME", |v| text(v, "/metadata/name")),
            c("PEERIP", |v| text(v, "/spec/peerIP")),
            c("NODE", peer_node),
            c("ASN", |v| text(v, "/spec/asNumber")),
        ],
        (Kind::BGPPeer, true) => vec![
            c("NAME", |v| text(v, "/metadata/name")),
            c("PEERIP", |v| text(v, "/spec/peerIP")),
            c("NODE", peer_node),
            c("ASN", |v| text(v, "/spec/asNumber")),
            c("PEERSELECTOR", |v| text(v, "/spec/peerSelector")),
            c("KEEPNEXTHOP", |v| flag(v, "/spec/keepOriginalNextHop")),
        ],
        (Kind::BGPConfiguration, _) => vec![
            c("NAME", |v| text(v, "/metadata/name")),
            c("LOGSEVERITY", |v| {
                match text(v, "/spec/logSeverityScreen") {
                    s if s.is_empty() => "Info".into(),
                    s => s,
                }
            }),
            c("MESHENABLED", |v| {
                match v.pointer("/spec/nodeToNodeMeshEnabled") {
                    Some(Value::Bool(b)) => b.to_string(),
                    _ => "true".into(),
                }
            }),
            c("ASNUMBER", |v| text(v, "/spec/asNumber")),
        ],
        (Kind::Node | Kind::FelixConfiguration, false) => {
            vec![c("NAME", |v| text(v, "/metadata/name"))]
        }
        (Kind::FelixConfiguration, true) => vec![c("NAME", |v| text(v, "/metadata/name"))],
        // calicoctl's `resourcemgr/bgpfilter.go`: the same columns with and without `wide`.
        (Kind::BGPFilter, _) => vec![
            c("NAME", |v| text(v, "/metadata/name")),
            c("NUMEXPORTV4", |v| rule_count(v, "/spec/exportV4")),
            c("NUMIMPORTV4", |v| rule_count(v, "/spec/importV4")),
            c("NUMEXPORTV6", |v| rule_count(v, "/spec/exportV6")),
            c("NUMIMPORTV6", |v| rule_count(v, "/spec/importV6")),
        ],
        (Kind::IPReservation, _) => vec![
            c("NAME", |v| text(v, "/metadata/name")),
            c("CIDRS", |v| {
                v.pointer("/spec/reservedCIDRs")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            }),
        ],
        (Kind::Node, true) => vec![
            c("NAME", |v| text(v, "/metadata/name")),
            c("ASN", |v| match text(v, "/spec/bgp/asNumber") {
                // calicoctl shows the global AS in parentheses when the node has none.
                s if s.is_empty() => "(64512)".into(),
                s => s,
            }),
            c("IPV4", |v| text(v, "/spec/bgp/ipv4Address")),
            c("IPV6", |v| text(v, "/spec/bgp/ipv6Address")),
        ],
    }
}

/// The NODE column of a BGPPeer: its node, its node selector, or `(global)`.
fn peer_node(v: &Value) -> String {
    let node = text(v, "/spec/node");
    if !node.is_empty() {
        return node;
    }
    let selector = text(v, "/spec/nodeSelector");
    if !selector.is_empty() {
        return selector;
    }
    "(global)".into()
}

/// Renders resources (as JSON values) as a table.
pub fn render(kind: Kind, wide: bool, rows: &[Value]) -> String {
    render_columns(&columns(kind, wide), rows)
}

/// Renders ClusterInformation objects with calicoctl's columns (the same in both widths).
pub fn render_cluster_information(rows: &[Value]) -> String {
    let c = |header, cell| Column { header, cell };
    let columns = [
        c("NAME", |v| text(v, "/metadata/name")),
        c("CLUSTERGUID", |v| text(v, "/spec/clusterGUID")),
        c("CLUSTERTYPE", |v| text(v, "/spec/clusterType")),
        c("CALICOVERSION", |v| text(v, "/spec/calicoVersion")),
        c("DATASTOREREADY", |v| text(v, "/spec/datastoreReady")),
    ];
    render_columns(&columns, rows)
}

/// A list at `pointer` joined with `,` (calicoctl's `join`).
fn joined(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                // An IPNAT, as Go's `%v` prints a struct: `{internal external}`.
                Value::Object(m) => format!(
                    "{{{} {}}}",
                    m.get("internalIP").and_then(Value::as_str).unwrap_or(""),
                    m.get("externalIP").and_then(Value::as_str).unwrap_or("")
                ),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}

/// The WORKLOAD column: `spec.workload`, else `spec.pod`.
fn workload(v: &Value) -> String {
    match text(v, "/spec/workload") {
        s if s.is_empty() => text(v, "/spec/pod"),
        s => s,
    }
}

/// Renders WorkloadEndpoints with calicoctl's columns: `WORKLOAD NODE NETWORKS INTERFACE`, or
/// `NAME WORKLOAD NODE NETWORKS INTERFACE PROFILES NATS` when wide; `NAMESPACE` first when a
/// namespace or all namespaces were asked for, as calicoctl does.
pub fn render_workload_endpoints(wide: bool, with_namespace: bool, rows: &[Value]) -> String {
    let c = |header, cell| Column { header, cell };
    let mut columns = Vec::new();
    if with_namespace {
        columns.push(c("NAMESPACE", |v| text(v, "/metadata/namespace")));
    }
    if wide {
        columns.push(c("NAME", |v| text(v, "/metadata/name")));
    }
    columns.push(c("WORKLOAD", workload));
    columns.push(c("NODE", |v| text(v, "/spec/node")));
    columns.push(c("NETWORKS", |v| joined(v, "/spec/ipNetworks")));
    columns.push(c("INTERFACE", |v| text(v, "/spec/interfaceName")));
    if wide {
        columns.push(c("PROFILES", |v| joined(v, "/spec/profiles")));
        columns.push(c("NATS", |v| joined(v, "/spec/ipNATs")));
    }
    render_columns(&columns, rows)
}

/// Renders policy objects with calicoctl's columns: policies `NAME TIER` (wide: `ORDER
/// SELECTOR` too), profiles `NAME` (wide: `LABELS`), network sets `NAME` (wide: `NETS`), tiers
/// `NAME ORDER`; `NAMESPACE` first for a namespaced kind when a namespace or all were asked.
pub fn render_policy(
    kind: calyx_datastore::policy::PolicyKind,
    wide: bool,
    with_namespace: bool,
    rows: &[Value],
) -> String {
    use calyx_datastore::policy::PolicyKind as P;
    let c = |header, cell| Column { header, cell };
    let mut columns = Vec::new();
    if with_namespace {
        columns.push(c("NAMESPACE", |v| text(v, "/metadata/namespace")));
    }
    columns.push(c("NAME", |v| text(v, "/metadata/name")));
    match kind {
        P::NetworkPolicy | P::GlobalNetworkPolicy => {
            columns.push(c("TIER", |v| match text(v, "/spec/tier") {
                t if t.is_empty() => "default".into(),
                t => t,
            }));
            if wide {
                columns.push(c("ORDER", |v| text(v, "/spec/order")));
                columns.push(c("SELECTOR", |v| text(v, "/spec/selector")));
            }
        }
        P::Profile if wide => {
            columns.push(c("LABELS", |v| match v.pointer("/spec/labelsToApply") {
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(","),
                _ => String::new(),
            }))
        }
        P::NetworkSet | P::GlobalNetworkSet if wide => columns.push(c("NETS", |v| {
            let mut s = joined(v, "/spec/nets");
            if s.len() > 80 {
                s.truncate(77);
                s.push_str("...");
            }
            s
        })),
        P::Tier => columns.push(c("ORDER", |v| text(v, "/spec/order"))),
        _ => {}
    }
    render_columns(&columns, rows)
}

fn render_columns(columns: &[Column], rows: &[Value]) -> String {
    let headers: Vec<&str> = columns.iter().map(|c| c.header).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| (c.cell)(row)).collect())
        .collect();
    render_rows(&headers, rows)
}

/// A table of ready-made cells under `headers`, padded as every other table.
pub fn render_rows(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut cells: Vec<Vec<String>> = vec![headers.iter().map(|h| h.to_string()).collect()];
    cells.extend(rows);
    let columns = headers;
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| cells.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in cells {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wide_pool_table_matches_calicoctl_columns() {
        let pool = json!({"metadata": {"name": "default-ipv4-ippool"},
            "spec": {"cidr": "192.168.0.0/16", "natOutgoing": true, "ipipMode": "Always",
                     "nodeSelector": "all()"}});
        let out = render(Kind::IPPool, true, &[pool]);
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            [
                "NAME",
                "CIDR",
                "NAT",
                "IPIPMODE",
                "VXLANMODE",
                "DISABLED",
                "DISABLEBGPEXPORT",
                "SELECTOR"
            ]
        );
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            [
                "default-ipv4-ippool",
                "192.168.0.0/16",
                "true",
                "Always",
                "Never",
                "false",
                "false",
                "all()"
            ]
        );
    }

    #[test]
    fn cluster_information_columns() {
        let ci = json!({"metadata": {"name": "default"},
            "spec": {"clusterGUID": "abc", "calicoVersion": "v0.1.0", "datastoreReady": false}});
        assert_eq!(
            render_cluster_information(&[ci]),
            "NAME      CLUSTERGUID   CLUSTERTYPE   CALICOVERSION   DATASTOREREADY\n\
             default   abc                         v0.1.0          false\n"
        );
    }

    #[test]
    fn workload_endpoint_columns() {
        let wep = json!({"metadata": {"name": "node1-k8s-web-eth0", "namespace": "ns1"},
            "spec": {"pod": "web", "node": "node1", "ipNetworks": ["10.244.0.5/32", "fd00::5/128"],
                     "interfaceName": "cali0123456789a", "profiles": ["kns.ns1"]}});
        assert_eq!(
            render_workload_endpoints(false, false, std::slice::from_ref(&wep)),
            "WORKLOAD   NODE    NETWORKS                    INTERFACE\n\
             web        node1   10.244.0.5/32,fd00::5/128   cali0123456789a\n"
        );
        let wide = render_workload_endpoints(true, true, &[wep]);
        assert_eq!(
            wide.lines()
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            [
                "NAMESPACE",
                "NAME",
                "WORKLOAD",
                "NODE",
                "NETWORKS",
                "INTERFACE",
                "PROFILES",
                "NATS"
            ]
        );
        assert_eq!(
            wide.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            [
                "ns1",
                "node1-k8s-web-eth0",
                "web",
                "node1",
                "10.244.0.5/32,fd00::5/128",
                "cali0123456789a",
                "kns.ns1"
            ]
        );
    }

    #[test]
    fn columns_are_aligned() {
        let rows = [
            json!({"metadata": {"name": "a"}}),
            json!({"metadata": {"name": "longer-name"}}),
        ];
        let out = render(Kind::Node, false, &rows);
        assert_eq!(out, "NAME\na\nlonger-name\n");
    }
}
