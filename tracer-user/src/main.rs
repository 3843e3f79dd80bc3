fn main() -> anyhow::Result<()> {
    let mut t = pyusage::loader::attach(std::path::Path::new("/sys/kernel/tracing"), std::process::id())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while std::time::Instant::now() < deadline {
        while let Some(item) = t.events.next() {
            println!("{:?}", tracer_common::user::Event::decode(&item).map(|e| match e { tracer_common::user::Event::Exec(x) => format!("EXEC {} {:?} args={:?} envlen={}", x.tgid, String::from_utf8_lossy(&x.filename), String::from_utf8_lossy(&x.args), x.env.len()), other => format!("{other:?}")}));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!("{:?}", t.counters());
    Ok(())
}
