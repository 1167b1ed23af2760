//! The field names of Calico 3.31's `projectcalico.org/v3` API, for checking user input.
//!
//! Stored objects are decoded leniently: every typed struct keeps the fields it does not model
//! in an `extra` map, so that an object written by calico-node, calicoctl or
//! calico-kube-controllers survives a read-modify-write by Calyx unchanged. What a user types
//! (`calyx apply/create/replace -f`, `calyx patch -p`) is checked here instead, against the
//! fields Calico's API has: a typo (`natoutgoing`) is one clear error, while every real field
//! of Calico 3.31 (`namespaceSelector`, `localASNumber`, `spec.interfaces`, ...) is accepted
//! and stored, even the ones Calyx does not act on.
//!
//! Sources (tag v3.31.7 of github.com/projectcalico/calico): `api/pkg/apis/projectcalico/v3/`
//! `ippool.go`, `bgppeer.go`, `bgpconfig.go`, `bgpfilter.go`, `felixconfig.go`; `libcalico-go/lib/apis/v3/node.go`;
//! Kubernetes' `ObjectMeta` for `metadata`.

use serde_json::Value;

use super::Kind;

/// What a JSON value may look like, as far as field names go (types are checked by serde).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// Anything (a scalar, a free-form map such as labels, or a part not checked).
    Any,
    /// An object with exactly these fields.
    Object(&'static [(&'static str, Shape)]),
    /// A list whose items have this shape.
    List(&'static Shape),
}

use Shape::{Any, List, Object};

/// Kubernetes `ObjectMeta` (k8s.io/apimachinery `meta/v1`), as Calico embeds it.
const METADATA: Shape = Object(&[
    ("name", Any),
    ("generateName", Any),
    ("namespace", Any),
    ("selfLink", Any),
    ("uid", Any),
    ("resourceVersion", Any),
    ("generation", Any),
    ("creationTimestamp", Any),
    ("deletionTimestamp", Any),
    ("deletionGracePeriodSeconds", Any),
    ("labels", Any),
    ("annotations", Any),
    ("ownerReferences", Any),
    ("finalizers", Any),
    ("managedFields", Any),
]);

/// `BGPPassword` with a Kubernetes `SecretKeySelector`.
const PASSWORD: Shape = Object(&[(
    "secretKeyRef",
    Object(&[("name", Any), ("key", Any), ("optional", Any)]),
)]);

const CIDR_BLOCK: Shape = Object(&[("cidr", Any)]);

const IPPOOL_SPEC: Shape = Object(&[
    ("cidr", Any),
    ("vxlanMode", Any),
    ("ipipMode", Any),
    ("natOutgoing", Any),
    ("disabled", Any),
    ("disableBGPExport", Any),
    ("blockSize", Any),
    ("nodeSelector", Any),
    ("namespaceSelector", Any),
    ("allowedUses", Any),
    ("assignmentMode", Any),
]);

const BGPPEER_SPEC: Shape = Object(&[
    ("node", Any),
    ("nodeSelector", Any),
    ("peerIP", Any),
    ("asNumber", Any),
    ("localASNumber", Any),
    ("peerSelector", Any),
    ("keepOriginalNextHop", Any),
    ("nextHopMode", Any),
    ("password", PASSWORD),
    ("sourceAddress", Any),
    ("maxRestartTime", Any),
    ("numAllowedLocalASNumbers", Any),
    ("ttlSecurity", Any),
    ("reachableBy", Any),
    ("filters", Any),
    ("localWorkloadSelector", Any),
    ("reversePeering", Any),
    // Calico Enterprise's field, and Calyx's BFD timers (resources/bfd.rs).
    ("failureDetectionMode", Any),
    ("bfd", BFD),
]);

/// Calyx's BFD timers, named after Calico Enterprise's BFDConfiguration (resources/bfd.rs).
const BFD: Shape = Object(&[
    ("minimumRecvInterval", Any),
    ("minimumSendInterval", Any),
    ("multiplier", Any),
]);

const BGPCONFIG_SPEC: Shape = Object(&[
    ("logSeverityScreen", Any),
    ("nodeToNodeMeshEnabled", Any),
    ("asNumber", Any),
    ("serviceLoadBalancerIPs", List(&CIDR_BLOCK)),
    ("serviceExternalIPs", List(&CIDR_BLOCK)),
    ("serviceClusterIPs", List(&CIDR_BLOCK)),
    ("serviceLoadBalancerAggregation", Any),
    (
        "communities",
        List(&Object(&[("name", Any), ("value", Any)])),
    ),
    (
        "prefixAdvertisements",
        List(&Object(&[("cidr", Any), ("communities", Any)])),
    ),
    ("listenPort", Any),
    ("nodeMeshPassword", PASSWORD),
    ("nodeMeshMaxRestartTime", Any),
    ("bindMode", Any),
    ("ignoredInterfaces", Any),
    ("localWorkloadPeeringIPV4", Any),
    ("localWorkloadPeeringIPV6", Any),
    // Calyx's BFD settings for the mesh and the default timers (resources/bfd.rs).
    ("nodeMeshFailureDetectionMode", Any),
    ("bfd", BFD),
]);

const NODE_SPEC: Shape = Object(&[
    (
        "bgp",
        Object(&[
            ("asNumber", Any),
            ("ipv4Address", Any),
            ("ipv6Address", Any),
            ("ipv4IPIPTunnelAddr", Any),
            ("routeReflectorClusterID", Any),
        ]),
    ),
    ("ipv4VXLANTunnelAddr", Any),
    ("vxlanTunnelMACAddr", Any),
    ("ipv6VXLANTunnelAddr", Any),
    ("vxlanTunnelMACAddrV6", Any),
    (
        "orchRefs",
        List(&Object(&[("nodeName", Any), ("orchestrator", Any)])),
    ),
    (
        "wireguard",
        Object(&[("interfaceIPv4Address", Any), ("interfaceIPv6Address", Any)]),
    ),
    (
        "addresses",
        List(&Object(&[("address", Any), ("type", Any)])),
    ),
    (
        "interfaces",
        List(&Object(&[("name", Any), ("addresses", Any)])),
    ),
]);

const NODE_STATUS: Shape = Object(&[
    ("wireguardPublicKey", Any),
    ("wireguardPublicKeyV6", Any),
    ("podCIDRs", Any),
]);

/// `FelixConfigurationSpec`'s top-level fields (`api/.../felixconfig.go`, generated from its
/// JSON tags); nested values are not checked.
const FELIX_SPEC: Shape = Object(&[
    ("useInternalDataplaneDriver", Any),
    ("dataplaneDriver", Any),
    ("dataplaneWatchdogTimeout", Any),
    ("ipv6Support", Any),
    ("routeRefreshInterval", Any),
    ("interfaceRefreshInterval", Any),
    ("iptablesRefreshInterval", Any),
    ("iptablesPostWriteCheckInterval", Any),
    ("iptablesLockFilePath", Any),
    ("iptablesLockTimeout", Any),
    ("iptablesLockProbeInterval", Any),
    ("featureDetectOverride", Any),
    ("featureGates", Any),
    ("ipsetsRefreshInterval", Any),
    ("maxIpsetSize", Any),
    ("iptablesBackend", Any),
    ("xdpRefreshInterval", Any),
    ("netlinkTimeout", Any),
    ("metadataAddr", Any),
    ("metadataPort", Any),
    ("openstackRegion", Any),
    ("interfacePrefix", Any),
    ("interfaceExclude", Any),
    ("chainInsertMode", Any),
    ("defaultEndpointToHostAction", Any),
    ("iptablesFilterAllowAction", Any),
    ("iptablesMangleAllowAction", Any),
    ("iptablesFilterDenyAction", Any),
    ("logPrefix", Any),
    ("logActionRateLimit", Any),
    ("logActionRateLimitBurst", Any),
    ("logFilePath", Any),
    ("logSeverityFile", Any),
    ("logSeverityScreen", Any),
    ("logSeveritySys", Any),
    ("logDebugFilenameRegex", Any),
    ("ipipEnabled", Any),
    ("ipipMTU", Any),
    ("vxlanEnabled", Any),
    ("vxlanMTU", Any),
    ("vxlanMTUV6", Any),
    ("vxlanPort", Any),
    ("vxlanVNI", Any),
    ("allowVXLANPacketsFromWorkloads", Any),
    ("allowIPIPPacketsFromWorkloads", Any),
    ("reportingInterval", Any),
    ("reportingTTL", Any),
    ("endpointReportingEnabled", Any),
    ("endpointReportingDelay", Any),
    ("endpointStatusPathPrefix", Any),
    ("iptablesMarkMask", Any),
    ("disableConntrackInvalidCheck", Any),
    ("healthEnabled", Any),
    ("healthHost", Any),
    ("healthPort", Any),
    ("healthTimeoutOverrides", Any),
    ("prometheusMetricsEnabled", Any),
    ("prometheusMetricsHost", Any),
    ("prometheusMetricsPort", Any),
    ("prometheusGoMetricsEnabled", Any),
    ("prometheusProcessMetricsEnabled", Any),
    ("prometheusWireGuardMetricsEnabled", Any),
    ("failsafeInboundHostPorts", Any),
    ("failsafeOutboundHostPorts", Any),
    ("kubeNodePortRanges", Any),
    ("policySyncPathPrefix", Any),
    ("usageReportingEnabled", Any),
    ("usageReportingInitialDelay", Any),
    ("usageReportingInterval", Any),
    ("natPortRange", Any),
    ("natOutgoingAddress", Any),
    ("natOutgoingExclusions", Any),
    ("deviceRouteSourceAddress", Any),
    ("deviceRouteSourceAddressIPv6", Any),
    ("deviceRouteProtocol", Any),
    ("removeExternalRoutes", Any),
    ("programClusterRoutes", Any),
    ("ipForwarding", Any),
    ("externalNodesList", Any),
    ("debugMemoryProfilePath", Any),
    ("debugDisableLogDropping", Any),
    ("debugSimulateCalcGraphHangAfter", Any),
    ("debugSimulateDataplaneHangAfter", Any),
    ("debugSimulateDataplaneApplyDelay", Any),
    ("debugHost", Any),
    ("debugPort", Any),
    ("iptablesNATOutgoingInterfaceFilter", Any),
    ("sidecarAccelerationEnabled", Any),
    ("xdpEnabled", Any),
    ("genericXDPEnabled", Any),
    ("nftablesMode", Any),
    ("nftablesRefreshInterval", Any),
    ("nftablesFilterAllowAction", Any),
    ("nftablesMangleAllowAction", Any),
    ("nftablesFilterDenyAction", Any),
    ("nftablesMarkMask", Any),
    ("bpfEnabled", Any),
    ("bpfDisableUnprivileged", Any),
    ("bpfJITHardening", Any),
    ("bpfLogLevel", Any),
    ("bpfConntrackLogLevel", Any),
    ("bpfConntrackMode", Any),
    ("bpfConntrackTimeouts", Any),
    ("bpfLogFilters", Any),
    ("bpfCTLBLogFilter", Any),
    ("bpfDataIfacePattern", Any),
    ("bpfL3IfacePattern", Any),
    ("bpfConnectTimeLoadBalancingEnabled", Any),
    ("bpfConnectTimeLoadBalancing", Any),
    ("bpfHostNetworkedNATWithoutCTLB", Any),
    ("bpfExternalServiceMode", Any),
    ("bpfDSROptoutCIDRs", Any),
    ("bpfExtToServiceConnmark", Any),
    ("bpfKubeProxyIptablesCleanupEnabled", Any),
    ("bpfKubeProxyMinSyncPeriod", Any),
    ("bpfKubeProxyHealthzPort", Any),
    ("bpfKubeProxyEndpointSlicesEnabled", Any),
    ("bpfPSNATPorts", Any),
    ("bpfMapSizeNATFrontend", Any),
    ("bpfMapSizeNATBackend", Any),
    ("bpfMapSizeNATAffinity", Any),
    ("bpfMapSizeRoute", Any),
    ("bpfMapSizeConntrack", Any),
    ("bpfMapSizePerCpuConntrack", Any),
    ("bpfMapSizeConntrackScaling", Any),
    ("bpfMapSizeConntrackCleanupQueue", Any),
    ("bpfMapSizeIPSets", Any),
    ("bpfMapSizeIfState", Any),
    ("bpfHostConntrackBypass", Any),
    ("bpfEnforceRPF", Any),
    ("bpfPolicyDebugEnabled", Any),
    ("bpfForceTrackPacketsFromIfaces", Any),
    ("bpfDisableGROForIfaces", Any),
    ("bpfExcludeCIDRsFromNAT", Any),
    ("bpfExportBufferSizeMB", Any),
    ("cgroupV2Path", Any),
    ("flowLogsPolicyEvaluationMode", Any),
    ("bpfRedirectToPeer", Any),
    ("bpfAttachType", Any),
    ("flowLogsFlushInterval", Any),
    ("flowLogsCollectorDebugTrace", Any),
    ("flowLogsGoldmaneServer", Any),
    ("flowLogsLocalReporter", Any),
    ("bpfProfiling", Any),
    ("routeSource", Any),
    ("routeTableRanges", Any),
    ("routeTableRange", Any),
    ("routeSyncDisabled", Any),
    ("wireguardEnabled", Any),
    ("wireguardEnabledV6", Any),
    ("wireguardThreadingEnabled", Any),
    ("wireguardListeningPort", Any),
    ("wireguardListeningPortV6", Any),
    ("wireguardRoutingRulePriority", Any),
    ("wireguardInterfaceName", Any),
    ("wireguardInterfaceNameV6", Any),
    ("wireguardMTU", Any),
    ("wireguardMTUV6", Any),
    ("wireguardHostEncryptionEnabled", Any),
    ("wireguardKeepAlive", Any),
    ("awsSrcDstCheck", Any),
    ("serviceLoopPrevention", Any),
    ("workloadSourceSpoofing", Any),
    ("mtuIfacePattern", Any),
    ("floatingIPs", Any),
    ("windowsManageFirewallRules", Any),
    ("goGCThreshold", Any),
    ("goMemoryLimitMB", Any),
    ("goMaxProcs", Any),
    ("requireMTUFile", Any),
]);

const IPPOOL: Shape = Object(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", METADATA),
    ("spec", IPPOOL_SPEC),
]);
const BGPPEER: Shape = Object(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", METADATA),
    ("spec", BGPPEER_SPEC),
]);
const BGPCONFIG: Shape = Object(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", METADATA),
    ("spec", BGPCONFIG_SPEC),
]);
const NODE: Shape = Object(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", METADATA),
    ("spec", NODE_SPEC),
    ("status", NODE_STATUS),
]);

const FELIX: Shape = Object(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", METADATA),
    ("spec", FELIX_SPEC),
]);

/// `IPReservationSpec` (`api/pkg/apis/projectcalico/v3/ipreservation.go`): one field.
const IPRESERVATION_SPEC: Shape = Object(&[("reservedCIDRs", Any)]);

const IPRESERVATION: Shape = Object(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", METADATA),
    ("spec", IPRESERVATION_SPEC),
]);

/// `BGPFilterRuleV4`/`V6` (`api/pkg/apis/projectcalico/v3/bgpfilter.go`, v3.31).
const BGPFILTER_RULE: Shape = Object(&[
    ("cidr", Any),
    ("prefixLength", Object(&[("min", Any), ("max", Any)])),
    ("source", Any),
    ("interface", Any),
    ("matchOperator", Any),
    ("action", Any),
]);

/// `BGPFilterSpec`: four ordered rule lists.
const BGPFILTER_SPEC: Shape = Object(&[
    ("exportV4", List(&BGPFILTER_RULE)),
    ("importV4", List(&BGPFILTER_RULE)),
    ("exportV6", List(&BGPFILTER_RULE)),
    ("importV6", List(&BGPFILTER_RULE)),
]);

const BGPFILTER: Shape = Object(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", METADATA),
    ("spec", BGPFILTER_SPEC),
]);

/// The shape of a whole object of `kind`.
pub(crate) fn shape(kind: Kind) -> Shape {
    match kind {
        Kind::IPPool => IPPOOL,
        Kind::BGPPeer => BGPPEER,
        Kind::BGPConfiguration => BGPCONFIG,
        Kind::Node => NODE,
        Kind::FelixConfiguration => FELIX,
        Kind::IPReservation => IPRESERVATION,
        Kind::BGPFilter => BGPFILTER,
    }
}

/// Checks that every field of `value` (a whole object of `kind`) is a field of Calico's API.
/// The error is serde's wording with the path: ``spec: unknown field `natoutgoing`, expected
/// one of `cidr`, ...``. With `nulls_allowed` (a merge patch), a `null` value passes whatever
/// its name: it removes a field, which cannot be a typo that matters.
pub(crate) fn check_fields(kind: Kind, value: &Value, nulls_allowed: bool) -> Result<(), String> {
    check(value, shape(kind), "", nulls_allowed)
}

/// Checks `value` against `shape` (the policy kinds' shapes live in `crate::policy`).
pub(crate) fn check_shape(value: &Value, shape: Shape) -> Result<(), String> {
    check(value, shape, "", false)
}

/// Kubernetes `ObjectMeta`, for the policy kinds' shapes.
pub(crate) const OBJECT_METADATA: Shape = METADATA;

fn check(value: &Value, shape: Shape, path: &str, nulls_allowed: bool) -> Result<(), String> {
    match (shape, value) {
        (Object(fields), Value::Object(map)) => {
            for (key, v) in map {
                if nulls_allowed && v.is_null() {
                    continue;
                }
                let Some((_, inner)) = fields.iter().find(|(name, _)| name == key) else {
                    let expected = fields
                        .iter()
                        .map(|(n, _)| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let prefix = if path.is_empty() {
                        String::new()
                    } else {
                        format!("{path}: ")
                    };
                    return Err(format!(
                        "{prefix}unknown field `{key}`, expected one of {expected}"
                    ));
                };
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                check(v, *inner, &sub, nulls_allowed)?;
            }
            Ok(())
        }
        (List(inner), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check(item, *inner, &format!("{path}[{i}]"), nulls_allowed)?;
            }
            Ok(())
        }
        // Wrong types are serde's to report, with its own wording.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calico_331_fields_pass_and_typos_fail() {
        let node = json!({"apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": "n", "generation": 2, "ownerReferences": []},
            "spec": {"interfaces": [{"name": "eth0", "addresses": ["10.0.0.1"]}],
                     "wireguard": {"interfaceIPv4Address": "10.1.0.1"},
                     "bgp": {"ipv4Address": "10.0.0.1/24"}},
            "status": {"podCIDRs": ["10.244.0.0/24"], "wireguardPublicKey": "k"}});
        assert_eq!(check_fields(Kind::Node, &node, false), Ok(()));
        let mut bad = node.clone();
        bad["spec"]["interfaces"][0]["nmae"] = json!("x");
        assert_eq!(
            check_fields(Kind::Node, &bad, false).unwrap_err(),
            "spec.interfaces[0]: unknown field `nmae`, expected one of `name`, `addresses`"
        );
        let pool = json!({"kind": "IPPool", "spec": {"cidr": "10.0.0.0/16",
            "namespaceSelector": "all()", "assignmentMode": "Manual", "natoutgoing": true}});
        let e = check_fields(Kind::IPPool, &pool, false).unwrap_err();
        assert!(e.starts_with("spec: unknown field `natoutgoing`"), "{e}");
        assert!(check_fields(Kind::IPPool, &json!({"status": {}}), false)
            .unwrap_err()
            .starts_with("unknown field `status`"));
        let bgp = json!({"spec": {"communities": [{"name": "a", "value": "1:2"}],
            "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["a"]}],
            "localWorkloadPeeringIPV4": "169.254.0.1", "serviceLoadBalancerAggregation": "Enabled"}});
        assert_eq!(check_fields(Kind::BGPConfiguration, &bgp, false), Ok(()));
        let peer = json!({"spec": {"localASNumber": 65001, "reversePeering": "Manual",
            "password": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}}});
        assert_eq!(check_fields(Kind::BGPPeer, &peer, false), Ok(()));
        let felix = json!({"spec": {"bpfEnabled": false, "floatingIPs": "Disabled",
            "routeTableRanges": [{"min": 1, "max": 250}], "wireguardEnabledV6": true}});
        assert_eq!(
            check_fields(Kind::FelixConfiguration, &felix, false),
            Ok(())
        );
        let e = check_fields(
            Kind::FelixConfiguration,
            &json!({"spec": {"bpfEnable": true}}),
            false,
        )
        .unwrap_err();
        assert!(e.starts_with("spec: unknown field `bpfEnable`"), "{e}");
        // A merge patch may remove anything.
        let patch = json!({"spec": {"someFutureField": null, "cidr": "10.0.0.0/8"}});
        assert_eq!(check_fields(Kind::IPPool, &patch, true), Ok(()));
        assert!(check_fields(Kind::IPPool, &patch, false).is_err());
    }
}
