fn main() {
    println!("{}", include_bytes!(concat!(env!("OUT_DIR"), "/tracer-ebpf")).len());
}
