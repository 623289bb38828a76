//! The uprtcd control plane.
