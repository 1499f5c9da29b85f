//! A minimal HTTP backend: answers `200 ok` to every request on the address
//! given as its only argument. It exists so the load balancer's tests can
//! kill -9 a backend that is a real process of its own.
#![forbid(unsafe_code)]

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: lb-test-backend ADDRESS (for example 127.0.0.1:8081)");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("lb-test-backend: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        let app = axum::Router::new().fallback(|| async { "ok" });
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("lb-test-backend: {e}");
            std::process::exit(1);
        }
    });
}
