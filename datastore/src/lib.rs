//! Calico-v3 resources and the Store trait with etcd v3 and in-memory backends.
