//! Placeholder: the load generator for any KServe V2 server arrives with the
//! throughput work (closed/open loop, HdrHistogram report). It exists now so
//! that the workspace has its final shape.

fn main() {
    eprintln!("loadtest: not implemented yet; see the project's issue tracker");
    std::process::exit(2);
}
