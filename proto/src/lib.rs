//! BGP wire format: messages, capabilities, path attributes, NLRI (pure, no I/O).
