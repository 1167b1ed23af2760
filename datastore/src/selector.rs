//! Calico label selectors (owned by the resources work).
