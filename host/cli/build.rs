// Tells the test suites which target triple is the host, so the
// components' shared library can be unit-tested natively.
fn main() {
    println!("cargo:rustc-env=ORDERS_HOST_TRIPLE={}", std::env::var("TARGET").expect("TARGET"));
}
