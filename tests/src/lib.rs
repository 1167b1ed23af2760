//! Support library for the end-to-end tests: fixtures that clean up after themselves.
