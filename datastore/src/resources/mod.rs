//! Calico `projectcalico.org/v3` resources (owned by the resources work).
