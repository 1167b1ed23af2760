//! Calico-style IPAM: pools, affine blocks, handles; every write a CAS transaction.
