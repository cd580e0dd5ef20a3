//! Placeholder: the live-kernel runner (issue 4) is being written.
