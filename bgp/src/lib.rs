//! The BGP speaker: sessions, RIB, best path, route reflection, graceful restart, policy.
