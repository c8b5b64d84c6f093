//! A counter that probes its WASI sandbox and counts one key describing what it found, e.g.
//! `env=0 args=0 cwd=none dirs=0 stdout=ok tcp=denied random=ok`. The host must grant
//! nothing: the integration test checks that exact key.

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "streamhost:test-sandbox/counting-in-sandbox",
    generate_all,
});

use exports::streamhost::counter::counter::{BatchResult, Delta, Entry, Guest};
use wasi::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
use wasi::sockets::{instance_network, tcp_create_socket};

struct Sandbox;

fn probe() -> String {
    let env = wasi::cli::environment::get_environment().len();
    let args = wasi::cli::environment::get_arguments().len();
    let cwd = wasi::cli::environment::initial_cwd().unwrap_or_else(|| "none".into());
    let dirs = wasi::filesystem::preopens::get_directories().len();
    let stdout = match wasi::cli::stdout::get_stdout().blocking_write_and_flush(b"hello from the sandbox\n") {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("{e:?}"),
    };
    let network = instance_network::instance_network();
    // Either step may be the one refused: creating the socket, or connecting it.
    let kafka = IpSocketAddress::Ipv4(Ipv4SocketAddress { port: 9092, address: (127, 0, 0, 1) });
    let tcp = match tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
        .and_then(|socket| socket.start_connect(&network, kafka))
    {
        Err(ErrorCode::AccessDenied) => "denied".to_owned(),
        Err(e) => format!("{e:?}"),
        Ok(()) => "connecting".to_owned(),
    };
    let a = wasi::random::random::get_random_u64();
    let b = wasi::random::random::get_random_u64();
    let random = if a != b { "ok" } else { "constant" };
    format!("env={env} args={args} cwd={cwd} dirs={dirs} stdout={stdout} tcp={tcp} random={random}")
}

impl Guest for Sandbox {
    fn process(_value: Vec<u8>) -> Result<Vec<Delta>, String> {
        Ok(vec![Delta { key: probe(), amount: 1 }])
    }

    fn process_batch(_data: Vec<u8>, ends: Vec<u32>) -> BatchResult {
        BatchResult { deltas: vec![Delta { key: probe(), amount: ends.len() as u64 }], rejected: vec![] }
    }

    fn top_n(counts: Vec<Entry>, _n: u32) -> Vec<Entry> {
        counts
    }
}

export!(Sandbox);
