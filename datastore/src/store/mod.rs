//! The Store trait and its backends.
