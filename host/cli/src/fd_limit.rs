//! The open-files limit of the process, raised at start so that the
//! connection cap (`--max-connections`) is what bounds clients, not a soft
//! limit of 1,024 descriptors that would make `accept` fail first.

/// Descriptors kept for everything but client connections: the store,
/// the sidecar's and outbound connections, compiled components, logs.
const RESERVED: u64 = 1024;

/// Raises the soft limit towards `max_connections` plus the reserve (never
/// past the hard limit) and warns when that is not enough.
pub fn raise_for(max_connections: u64) {
    let wanted = max_connections.saturating_add(RESERVED);
    let reached = raise_soft_limit(wanted);
    if reached < wanted {
        tracing::warn!(
            open_files = reached,
            max_connections,
            "the open-files limit is below --max-connections plus {RESERVED}; raise it (ulimit -n) or lower --max-connections"
        );
    }
}

/// Raises the soft limit to the hard one. For processes whose connections
/// have no cap of their own (the sidecar: one per instance slot) and for
/// `orders cluster`, whose children (nginx, sidecars, instances) inherit it.
pub fn raise_to_hard() {
    raise_soft_limit(u64::MAX);
}

/// Raises the soft limit towards `wanted`, never past the hard limit (which
/// an unprivileged process cannot move); returns the soft limit in force.
fn raise_soft_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit { rlim_cur: wanted.min(limit.rlim_max), rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}
