//! Fixture apps (written by the host helper).
