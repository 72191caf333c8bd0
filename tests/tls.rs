//! HTTPS: the `flowrun` binary against a TLS server on 127.0.0.1 whose
//! certificate is signed by a certificate authority made for the test, and
//! the errors of `--cacert`.

mod support;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flowrun::store::sqlite::SqliteStore;
use flowrun::store::{ExecutionStatus, Store};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value;
use support::cli::{flowrun, output, path_str, Workspace};
use tokio_rustls::rustls;

/// A certificate authority and a server certificate for `127.0.0.1` that it
/// signed, both made anew for each test.
struct Certificates {
    ca_pem: String,
    server_der: rustls::pki_types::CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

fn make_certificates() -> Certificates {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "flowrun test CA");
    let ca_certificate = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let server_certificate = server_params.signed_by(&server_key, &issuer).unwrap();
    Certificates {
        ca_pem: ca_certificate.pem(),
        server_der: server_certificate.der().clone(),
        server_key_der: server_key.serialize_der(),
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Received {
    version: Version,
    /// The number of the TCP connection it came over, from 1.
    connection: usize,
    target: String,
    body: Vec<u8>,
}

/// A TLS server on 127.0.0.1 that offers the protocols of `alpn`, responds
/// to every request with `{"status":"ok"}` after `delay`, and records the
/// requests and the TCP connections it accepted.
struct TlsServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    /// The signal that sends the response to the first request, when the
    /// server delays it until then.
    first_released: Arc<tokio::sync::Notify>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsServer {
    fn start(certificates: &Certificates, alpn: &[&[u8]], delay: Duration) -> TlsServer {
        TlsServer::start_with(certificates, alpn, delay, false)
    }

    /// Starts a server like [`TlsServer::start`], without a delay, that
    /// delays its response to the first request it receives until
    /// [`TlsServer::release_first`].
    fn start_holding_first(certificates: &Certificates, alpn: &[&[u8]]) -> TlsServer {
        TlsServer::start_with(certificates, alpn, Duration::ZERO, true)
    }

    fn start_with(
        certificates: &Certificates,
        alpn: &[&[u8]],
        delay: Duration,
        hold_first: bool,
    ) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certificates.server_der.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(certificates.server_key_der.clone().into()),
            )
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let first_released = Arc::new(tokio::sync::Notify::new());
        let (received_by_server, connections_by_server) = (received.clone(), connections.clone());
        let released_for_server = first_released.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let connection = connections_by_server.fetch_add(1, Ordering::SeqCst) + 1;
                let acceptor = acceptor.clone();
                let received = received_by_server.clone();
                let first_released = released_for_server.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate ends the handshake.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let received = received.clone();
                        let first_released = first_released.clone();
                        async move {
                            let version = request.version();
                            let target = request.uri().path().to_string();
                            let body = request.into_body().collect().await?.to_bytes().to_vec();
                            let first = {
                                let mut received = received.lock().unwrap();
                                received.push(Received {
                                    version,
                                    connection,
                                    target,
                                    body,
                                });
                                received.len() == 1
                            };
                            if first && hold_first {
                                first_released.notified().await;
                            }
                            tokio::time::sleep(delay).await;
                            let reply = Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(b"{\"status\":\"ok\"}")))
                                .unwrap();
                            Ok::<_, hyper::Error>(reply)
                        }
                    });
                    let io = TokioIo::new(tls);
                    // Errors here are clients that went away.
                    if http2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        TlsServer {
            addr,
            received,
            connections,
            first_released,
            runtime: Some(runtime),
        }
    }

    /// Sends the response to the first request, which a server started
    /// with [`TlsServer::start_holding_first`] delays until then.
    fn release_first(&self) {
        self.first_released.notify_one();
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Writes a one-step workflow that POSTs `{"id": ...}` to `/claims/ID` and
/// saves the server's `status` into the entity.
fn post_flow(workspace: &Workspace, server: &TlsServer) -> PathBuf {
    workspace.file(
        "sync.flow",
        format!(
            "workflow \"Sync\"\n\nstep \"Send\" {{\n  http POST \"{}/claims/<<entity.id>>\" json {{\n    \"id\": \"<<entity.id>>\"\n  }}\n  save response.json.status -> entity.status\n}}\n",
            server.url()
        ),
    )
}

fn records(workspace: &Workspace, count: usize) -> PathBuf {
    let lines: String = (0..count)
        .map(|index| format!("{{\"id\":\"C-{index}\"}}\n"))
        .collect();
    workspace.file("records.jsonl", lines)
}

/// Returns the body that the workflow of [`post_flow`] sends for record `id`.
fn expected_body(id: &str) -> Vec<u8> {
    format!("{{\n  \"id\": \"{id}\"\n}}").into_bytes()
}

/// Builds a `flowrun` command without a CA file or store from the
/// environment of the test run.
fn command(args: &[&str]) -> std::process::Command {
    let mut command = flowrun(args);
    command.env_remove("FLOWRUN_CACERT").env_remove("FLOWRUN_STORE");
    command
}

/// Sorts received requests by target, since concurrent requests arrive in
/// any order.
fn sorted(mut received: Vec<Received>) -> Vec<Received> {
    received.sort_by(|a, b| a.target.cmp(&b.target));
    received
}

#[test]
fn concurrent_batch_shares_one_http2_connection() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let ca = workspace.file("ca.pem", &certificates.ca_pem);
    // Each response is delayed by 50 ms, so the executions overlap.
    let server = TlsServer::start(&certificates, &[b"h2", b"http/1.1"], Duration::from_millis(50));
    let flow = post_flow(&workspace, &server);
    let input = records(&workspace, 8);

    let (exit, stdout, stderr) = output(&mut command(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--concurrency",
        "4",
        "--cacert",
        path_str(&ca),
        "--no-store",
    ]));

    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 8, "{stdout}");
    assert!(
        stdout.lines().all(|line| line.contains("\"status\":\"ok\"")),
        "{stdout}"
    );
    let received = sorted(server.received());
    let targets: Vec<&str> = received.iter().map(|request| request.target.as_str()).collect();
    let expected_targets: Vec<String> = (0..8).map(|index| format!("/claims/C-{index}")).collect();
    assert_eq!(targets, expected_targets);
    for request in &received {
        assert_eq!(request.version, Version::HTTP_2, "{request:?}");
        assert_eq!(request.connection, 1, "{request:?}");
        let id = request.target.trim_start_matches("/claims/");
        assert_eq!(request.body, expected_body(id), "{request:?}");
    }
    assert_eq!(server.connection_count(), 1);
}

#[test]
fn http1_server_keeps_one_connection_alive() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let ca = workspace.file("ca.pem", &certificates.ca_pem);
    let server = TlsServer::start(&certificates, &[b"http/1.1"], Duration::ZERO);
    let flow = post_flow(&workspace, &server);
    let input = records(&workspace, 5);

    let (exit, stdout, stderr) = output(&mut command(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--concurrency",
        "1",
        "--cacert",
        path_str(&ca),
        "--no-store",
    ]));

    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    let received = server.received();
    let targets: Vec<&str> = received.iter().map(|request| request.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/claims/C-0",
            "/claims/C-1",
            "/claims/C-2",
            "/claims/C-3",
            "/claims/C-4"
        ]
    );
    for request in &received {
        assert_eq!(request.version, Version::HTTP_11, "{request:?}");
        assert_eq!(request.connection, 1, "{request:?}");
        let id = request.target.trim_start_matches("/claims/");
        assert_eq!(request.body, expected_body(id), "{request:?}");
    }
    assert_eq!(server.connection_count(), 1);
}

#[test]
fn cacert_from_environment_is_trusted() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let ca = workspace.file("ca.pem", &certificates.ca_pem);
    let server = TlsServer::start(&certificates, &[b"h2", b"http/1.1"], Duration::ZERO);
    let flow = post_flow(&workspace, &server);
    let entity = workspace.file("entity.json", "{\"id\":\"C-1\"}");

    let (exit, stdout, stderr) = output(
        command(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--no-store",
        ])
        .env("FLOWRUN_CACERT", &ca),
    );

    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(stdout.trim(), "{\n  \"id\": \"C-1\",\n  \"status\": \"ok\"\n}");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].version, Version::HTTP_2);
    assert_eq!(received[0].body, expected_body("C-1"));
}

#[test]
fn private_ca_rejected_without_cacert() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let server = TlsServer::start(&certificates, &[b"h2", b"http/1.1"], Duration::ZERO);
    let flow = post_flow(&workspace, &server);
    let entity = workspace.file("entity.json", "{\"id\":\"C-1\"}");

    let (exit, stdout, stderr) = output(&mut command(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--no-store",
    ]));

    // The step's default `on error pause notify` pauses the execution.
    assert_eq!(exit, 3, "{stderr}");
    assert_eq!(stdout.trim(), "{\n  \"id\": \"C-1\"\n}");
    assert!(stderr.contains("flow::run::connection_failed"), "{stderr}");
    let message = format!(
        "POST {}/claims/C-1: the server's certificate is not trusted: invalid peer certificate: UnknownIssuer",
        server.url()
    );
    assert!(stderr.contains(&message), "{stderr}");
    assert!(
        stderr.contains("pass the authority's certificate in PEM with --cacert FILE or FLOWRUN_CACERT"),
        "{stderr}"
    );
    assert_eq!(server.received().len(), 0);
}

#[test]
fn resume_trusts_cacert() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let ca = workspace.file("ca.pem", &certificates.ca_pem);
    let server = TlsServer::start(&certificates, &[b"h2", b"http/1.1"], Duration::ZERO);
    let flow = post_flow(&workspace, &server);
    let entity = workspace.file("entity.json", "{\"id\":\"C-1\"}");
    let store = workspace.dir.path().join("store.db");

    let (exit, _, stderr) = output(&mut command(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--store",
        path_str(&store),
        "--execution-id",
        "tls-1",
    ]));
    assert_eq!(exit, 3, "{stderr}");
    assert_eq!(server.received().len(), 0);

    let (exit, stdout, stderr) = output(&mut command(&[
        "resume",
        "tls-1",
        "--store",
        path_str(&store),
        "--cacert",
        path_str(&ca),
    ]));
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(stdout.trim(), "{\n  \"id\": \"C-1\",\n  \"status\": \"ok\"\n}");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].version, Version::HTTP_2);
}

/// Runs a workflow with `--cacert path` and returns the exit code, standard
/// output and standard error. Nothing listens on the workflow's port.
fn run_with_cacert(workspace: &Workspace, path: &Path) -> (i32, String, String) {
    let flow = workspace.file("get.flow", "http GET \"https://127.0.0.1:9/health\"\n");
    output(&mut command(&[
        "run",
        path_str(&flow),
        "--cacert",
        path_str(path),
        "--no-store",
    ]))
}

#[test]
fn cacert_bad_input_exits_2() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let folder = workspace.dir.path();
    let missing = folder.join("missing.pem");
    let der = workspace.file("ca.der", certificates.server_der.as_ref());
    let key = workspace.file("key.pem", KeyPair::generate().unwrap().serialize_pem());
    let unterminated = workspace.file("open.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let garbage = workspace.file(
        "garbage.pem",
        format!(
            "{}-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
            certificates.ca_pem
        ),
    );
    let bad_base64 = workspace.file(
        "bad-base64.pem",
        "-----BEGIN CERTIFICATE-----\nMIIBbroken!!\n-----END CERTIFICATE-----\n",
    );
    let folder_shown = folder.display();
    let cases = [
        (
            missing.clone(),
            format!(
                "cannot read CA certificate file `{}`: No such file or directory (os error 2)",
                missing.display()
            ),
            "set --cacert (or FLOWRUN_CACERT) to the path of a PEM file that holds the certificate of the certificate authority".to_string(),
        ),
        (
            folder.to_path_buf(),
            format!("cannot read CA certificate file `{folder_shown}`: it is a folder, not a regular file"),
            "set --cacert (or FLOWRUN_CACERT) to the path of a PEM file that holds the certificate of the certificate authority".to_string(),
        ),
        (
            der.clone(),
            format!(
                "CA certificate file `{}` is not PEM: it has no `-----BEGIN CERTIFICATE-----` line",
                der.display()
            ),
            format!(
                "convert a DER certificate to PEM with `openssl x509 -inform der -in {} -out ca.pem` and set --cacert (or FLOWRUN_CACERT) to ca.pem",
                der.display()
            ),
        ),
        (
            key.clone(),
            format!(
                "CA certificate file `{}` contains no certificate, only `PRIVATE KEY`",
                key.display()
            ),
            "set --cacert (or FLOWRUN_CACERT) to the file that begins with `-----BEGIN CERTIFICATE-----`; a private key is not needed".to_string(),
        ),
        (
            unterminated.clone(),
            format!(
                "CA certificate file `{}` is not valid PEM: the `-----BEGIN CERTIFICATE-----` section has no `-----END CERTIFICATE-----` line",
                unterminated.display()
            ),
            "export the certificate again in PEM, with each section between its `-----BEGIN` and `-----END` lines".to_string(),
        ),
        (
            garbage.clone(),
            format!(
                "CA certificate file `{}`: certificate 2 of 2 is not a valid X.509 certificate: its bytes do not decode as a DER certificate",
                garbage.display()
            ),
            "export the certificate of the certificate authority again, in PEM".to_string(),
        ),
        (
            bad_base64.clone(),
            format!(
                "CA certificate file `{}` is not valid PEM: the text between its `-----BEGIN` and `-----END` lines is not valid base64",
                bad_base64.display()
            ),
            "export the certificate again in PEM, with each section between its `-----BEGIN` and `-----END` lines".to_string(),
        ),
    ];
    for (path, message, help) in cases {
        let (exit, stdout, stderr) = run_with_cacert(&workspace, &path);
        assert_eq!(exit, 2, "{path:?}: {stderr}");
        assert_eq!(stdout, "", "{path:?}");
        assert!(
            stderr.contains("flow::input::invalid_cacert"),
            "{path:?}: {stderr}"
        );
        assert!(stderr.contains(&message), "{path:?}: {stderr}");
        assert!(stderr.contains(&help), "{path:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{path:?}: {stderr}");
    }
}

#[test]
fn cacert_bad_input_stops_batch_and_resume() {
    let workspace = Workspace::new();
    let flow = workspace.file("get.flow", "http GET \"https://127.0.0.1:9/health\"\n");
    let input = records(&workspace, 2);
    let missing = workspace.dir.path().join("missing.pem");
    let store = workspace.dir.path().join("store.db");
    let message = format!(
        "cannot read CA certificate file `{}`: No such file or directory (os error 2)",
        missing.display()
    );

    let (exit, stdout, stderr) = output(
        command(&[
            "run",
            path_str(&flow),
            "--entities",
            path_str(&input),
            "--store",
            path_str(&store),
        ])
        .env("FLOWRUN_CACERT", &missing),
    );
    assert_eq!(exit, 2, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("flow::input::invalid_cacert"), "{stderr}");
    assert!(stderr.contains(&message), "{stderr}");
    assert!(!store.exists(), "the batch created the store");

    // Nothing listens on port 9, so the execution pauses.
    let (exit, _, stderr) = output(&mut command(&[
        "run",
        path_str(&flow),
        "--store",
        path_str(&store),
        "--execution-id",
        "tls-2",
    ]));
    assert_eq!(exit, 3, "{stderr}");
    let (exit, stdout, stderr) = output(&mut command(&[
        "resume",
        "tls-2",
        "--store",
        path_str(&store),
        "--cacert",
        path_str(&missing),
    ]));
    assert_eq!(exit, 2, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("flow::input::invalid_cacert"), "{stderr}");
    assert!(stderr.contains(&message), "{stderr}");
}

#[test]
fn project_file_cacert_is_trusted() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    workspace.file("ca.pem", &certificates.ca_pem);
    workspace.file("flowrun.toml", "[tls]\ncacert = \"ca.pem\"\n");
    let server = TlsServer::start(&certificates, &[b"h2", b"http/1.1"], Duration::ZERO);
    let flow = post_flow(&workspace, &server);
    let entity = workspace.file("entity.json", "{\"id\":\"C-1\"}");

    // The current folder is elsewhere: the path is relative to flowrun.toml.
    let (exit, stdout, stderr) = output(
        command(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--no-store",
        ])
        .current_dir(std::env::temp_dir()),
    );

    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(stdout.trim(), "{\n  \"id\": \"C-1\",\n  \"status\": \"ok\"\n}");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].version, Version::HTTP_2);
}

#[test]
fn cacert_option_wins_over_project_file() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let ca = workspace.file("ca.pem", &certificates.ca_pem);
    workspace.file("flowrun.toml", "[tls]\ncacert = \"missing.pem\"\n");
    let server = TlsServer::start(&certificates, &[b"h2", b"http/1.1"], Duration::ZERO);
    let flow = post_flow(&workspace, &server);
    let entity = workspace.file("entity.json", "{\"id\":\"C-1\"}");

    let (exit, _, stderr) = output(&mut command(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--cacert",
        path_str(&ca),
        "--no-store",
    ]));
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(server.received().len(), 1);

    let (exit, stdout, stderr) = output(&mut command(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--no-store",
    ]));
    assert_eq!(exit, 2, "{stderr}");
    assert_eq!(stdout, "");
    let folder = workspace.dir.path().display();
    assert!(
        stderr.contains(&format!(
            "cannot read CA certificate file `{folder}/missing.pem`: No such file or directory (os error 2)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "set `cacert` under `[tls]` in `{folder}/flowrun.toml` to the path of a PEM file that holds the certificate of the certificate authority"
        )),
        "{stderr}"
    );
    assert_eq!(server.received().len(), 1);
}

/// Runs a batch of two records against `server` without a CA file, so that
/// both executions pause at the rejected certificate.
fn paused_batch(workspace: &Workspace, server: &TlsServer, store: &Path) {
    let flow = post_flow(workspace, server);
    let input = records(workspace, 2);
    let (exit, stdout, stderr) = output(&mut command(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--store",
        path_str(store),
    ]));
    assert_eq!(exit, 3, "{stderr}");
    assert_eq!(stdout, "{\"id\":\"C-0\"}\n{\"id\":\"C-1\"}\n");
    assert_eq!(server.received().len(), 0);
}

/// Returns the targets and bodies the server received, sorted by target.
fn targets_and_bodies(server: &TlsServer) -> Vec<(String, Vec<u8>)> {
    sorted(server.received())
        .into_iter()
        .map(|received| (received.target, received.body))
        .collect()
}

#[test]
fn resume_all_trusts_cacert() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let ca = workspace.file("ca.pem", &certificates.ca_pem);
    let server = TlsServer::start(&certificates, &[b"h2", b"http/1.1"], Duration::ZERO);
    let store = workspace.dir.path().join("store.db");
    paused_batch(&workspace, &server, &store);

    let (exit, stdout, stderr) = output(&mut command(&[
        "resume",
        "--all",
        "--store",
        path_str(&store),
        "--cacert",
        path_str(&ca),
    ]));
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(
        stdout,
        "{\"id\":\"C-0\",\"status\":\"ok\"}\n{\"id\":\"C-1\",\"status\":\"ok\"}\n"
    );
    assert_eq!(
        targets_and_bodies(&server),
        vec![
            ("/claims/C-0".to_string(), expected_body("C-0")),
            ("/claims/C-1".to_string(), expected_body("C-1")),
        ]
    );
}

#[test]
fn resume_all_reads_project_cacert() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let server = TlsServer::start(&certificates, &[b"h2", b"http/1.1"], Duration::ZERO);
    let store = workspace.dir.path().join("store.db");
    paused_batch(&workspace, &server, &store);

    // A --cacert file that cannot be used stops the command before it
    // sends anything.
    let missing = workspace.dir.path().join("missing.pem");
    let (exit, stdout, stderr) = output(&mut command(&[
        "resume",
        "--all",
        "--store",
        path_str(&store),
        "--cacert",
        path_str(&missing),
    ]));
    assert_eq!(exit, 2, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("flow::input::invalid_cacert"), "{stderr}");
    assert_eq!(server.received().len(), 0);

    workspace.file("ca.pem", &certificates.ca_pem);
    workspace.file("flowrun.toml", "[tls]\ncacert = \"ca.pem\"\n");
    let (exit, stdout, stderr) =
        output(command(&["resume", "--all", "--store", path_str(&store)]).current_dir(std::env::temp_dir()));
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(
        stdout,
        "{\"id\":\"C-0\",\"status\":\"ok\"}\n{\"id\":\"C-1\",\"status\":\"ok\"}\n"
    );
    assert_eq!(
        targets_and_bodies(&server),
        vec![
            ("/claims/C-0".to_string(), expected_body("C-0")),
            ("/claims/C-1".to_string(), expected_body("C-1")),
        ]
    );
}

/// Reads the JSON Lines log that `child` writes to standard error on a
/// thread of its own, and passes each event on as it arrives.
fn log_events(child: &mut Child) -> mpsc::Receiver<Value> {
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (sender, events) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let event = serde_json::from_str(&line.unwrap()).unwrap();
            if sender.send(event).is_err() {
                return;
            }
        }
    });
    events
}

/// Receives events into `log` until `done` returns true for it. Kills
/// `child` and fails the test, naming `condition`, when no event comes for
/// 30 s or when the log ends first.
fn wait_for_log(
    child: &mut Child,
    events: &mpsc::Receiver<Value>,
    log: &mut Vec<Value>,
    condition: &str,
    done: impl Fn(&[Value]) -> bool,
) {
    while !done(log) {
        match events.recv_timeout(Duration::from_secs(30)) {
            Ok(event) => log.push(event),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{condition}: no further log event ({error}): {log:#?}");
            }
        }
    }
}

fn messages(log: &[Value]) -> Vec<&str> {
    log.iter().filter_map(|event| event["message"].as_str()).collect()
}

/// Parses the JSON Lines a batch printed, sorted by their `id` field.
fn entities_by_id(stdout: &[u8]) -> Vec<Value> {
    let mut entities: Vec<Value> = String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    entities.sort_by_key(|entity| entity["id"].as_str().unwrap().to_string());
    entities
}

#[test]
fn ctrl_c_ends_wait_for_first_response() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let ca = workspace.file("ca.pem", &certificates.ca_pem);
    let server = TlsServer::start_holding_first(&certificates, &[b"h2", b"http/1.1"]);
    let flow = post_flow(&workspace, &server);
    let input = records(&workspace, 4);
    let store = workspace.dir.path().join("store.db");

    let mut child = command(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--concurrency",
        "3",
        "--unordered",
        "--cacert",
        path_str(&ca),
        "--store",
        path_str(&store),
        "--log-format",
        "json",
        "--verbose",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let events = log_events(&mut child);
    let mut log = Vec::new();

    // Three executions have started their step. The server delays its
    // response to the first request, so the other two wait for its headers.
    let started = |log: &[Value]| {
        messages(log)
            .iter()
            .filter(|message| **message == "started")
            .count()
    };
    wait_for_log(&mut child, &events, &mut log, "three steps start", |log| {
        started(log) == 3
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.received().is_empty() {
        assert!(Instant::now() < deadline, "the first request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());

    // The two waiting executions pause while the server still delays the
    // first response, so Ctrl-C ended their wait, not the response.
    let url = server.url();
    let not_sent = |log: &[Value]| {
        messages(log)
            .iter()
            .filter(|message| {
                message.contains(") paused at step \"Send\": POST ")
                    && message.ends_with(": not sent: the run was interrupted while the request waited")
            })
            .count()
    };
    wait_for_log(
        &mut child,
        &events,
        &mut log,
        "the waiting executions pause",
        |log| not_sent(log) == 2,
    );
    assert_eq!(server.received().len(), 1);
    let first_id = server.received()[0]
        .target
        .trim_start_matches("/claims/")
        .to_string();
    server.release_first();

    let result = child.wait_with_output().unwrap();
    log.extend(events.iter());
    let messages = messages(&log);
    assert_eq!(result.status.code(), Some(130), "{messages:#?}");
    let entities = entities_by_id(&result.stdout);
    let expected: Vec<Value> = ["C-0", "C-1", "C-2"]
        .into_iter()
        .map(|id| {
            if id == first_id {
                serde_json::json!({"id": id, "status": "ok"})
            } else {
                serde_json::json!({"id": id})
            }
        })
        .collect();
    assert_eq!(entities, expected);
    for (number, id) in [(1, "C-0"), (2, "C-1"), (3, "C-2")] {
        if id == first_id {
            continue;
        }
        let paused = messages.iter().any(|message| {
            message.starts_with(&format!("record {number} (line {number}, execution "))
                && message.ends_with(&format!(
                    ") paused at step \"Send\": POST {url}/claims/{id}: not sent: the run was interrupted \
                     while the request waited"
                ))
        });
        assert!(paused, "{id}: {messages:#?}");
    }
    let interrupted = "interrupted: no further record starts, and requests waiting for a Retry-After, for \
                       --rate or for the first response from an HTTPS origin are not sent; waiting for 3 \
                       running executions to finish (Ctrl-C again stops them at once)";
    assert!(messages.contains(&interrupted), "{messages:#?}");
    assert!(
        messages
            .iter()
            .any(|message| message.ends_with(": 1 succeeded, 0 failed, 2 paused, 0 not run")),
        "{messages:#?}"
    );
    assert!(
        messages.iter().any(|message| message.starts_with(
            "interrupted: records up to number 3 started and each ended as succeeded, failed or paused;"
        )),
        "{messages:#?}"
    );
    // Only the first request was sent. The fourth record never started.
    assert_eq!(server.received().len(), 1);

    // The two executions wait in the store, paused at the step whose
    // request was not sent.
    let opened = SqliteStore::open(&store).unwrap();
    let mut stored_ids = Vec::new();
    for summary in opened.executions(None).unwrap() {
        let record = opened.execution(&summary.id).unwrap();
        let id = record.entity_before["id"].as_str().unwrap().to_string();
        let step = &opened.steps(&summary.id).unwrap()[0];
        if id == first_id {
            assert_eq!(summary.status, ExecutionStatus::Succeeded);
            let codes: Vec<Option<u16>> = step.attempts.iter().map(|attempt| attempt.status_code).collect();
            assert_eq!(codes, [Some(200)]);
        } else {
            assert_eq!(summary.status, ExecutionStatus::Paused, "{id}");
            assert_eq!(step.code.as_deref(), Some("flow::run::interrupted"), "{id}");
            assert_eq!(step.attempts, [], "{id}");
        }
        stored_ids.push(id);
    }
    stored_ids.sort();
    assert_eq!(stored_ids, ["C-0", "C-1", "C-2"]);
    drop(opened);

    // resume --all sends the two requests that were not sent.
    let (exit, stdout, stderr) = output(&mut command(&[
        "resume",
        "--all",
        "--store",
        path_str(&store),
        "--cacert",
        path_str(&ca),
    ]));
    assert_eq!(exit, 0, "{stderr}");
    let mut resumed: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    resumed.sort_by_key(|entity| entity["id"].as_str().unwrap().to_string());
    let expected: Vec<Value> = ["C-0", "C-1", "C-2"]
        .into_iter()
        .filter(|id| *id != first_id)
        .map(|id| serde_json::json!({"id": id, "status": "ok"}))
        .collect();
    assert_eq!(resumed, expected);
    assert_eq!(
        targets_and_bodies(&server),
        vec![
            ("/claims/C-0".to_string(), expected_body("C-0")),
            ("/claims/C-1".to_string(), expected_body("C-1")),
            ("/claims/C-2".to_string(), expected_body("C-2")),
        ]
    );
    let opened = SqliteStore::open(&store).unwrap();
    let statuses: Vec<ExecutionStatus> = opened
        .executions(None)
        .unwrap()
        .into_iter()
        .map(|summary| summary.status)
        .collect();
    assert_eq!(statuses, [ExecutionStatus::Succeeded; 3]);
}

#[test]
fn ctrl_c_ends_resumed_wait_for_first_response() {
    let workspace = Workspace::new();
    let certificates = make_certificates();
    let ca = workspace.file("ca.pem", &certificates.ca_pem);
    let server = TlsServer::start_holding_first(&certificates, &[b"h2", b"http/1.1"]);
    let store = workspace.dir.path().join("store.db");
    // Both executions pause at the certificate, which the batch does not trust.
    paused_batch(&workspace, &server, &store);

    let mut child = command(&[
        "resume",
        "--all",
        "--store",
        path_str(&store),
        "--cacert",
        path_str(&ca),
        "--log-format",
        "json",
        "--verbose",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let events = log_events(&mut child);
    let mut log = Vec::new();

    // Both executions have started their step, and the server delays its
    // response to the first request, so the other waits for its headers.
    wait_for_log(&mut child, &events, &mut log, "two steps start", |log| {
        messages(log)
            .iter()
            .filter(|message| **message == "started")
            .count()
            == 2
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.received().is_empty() {
        assert!(Instant::now() < deadline, "the first request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());

    // The waiting execution's step fails at once with flow::run::interrupted,
    // and the test waits for that event. The line `execution ID paused at
    // step ...` can come much later, because resume --all prints the lines of
    // its executions oldest first. When the held request belongs to the older
    // execution, the line of the other waits until the held request ends.
    wait_for_log(
        &mut child,
        &events,
        &mut log,
        "the waiting step fails as interrupted",
        |log| {
            log.iter().any(|event| {
                event["code"] == "flow::run::interrupted"
                    && event["message"]
                        .as_str()
                        .is_some_and(|message| message.starts_with("failed in "))
            })
        },
    );
    assert_eq!(server.received().len(), 1);
    let held_id = server.received()[0]
        .target
        .trim_start_matches("/claims/")
        .to_string();
    let waiting_id = if held_id == "C-0" { "C-1" } else { "C-0" };
    server.release_first();

    // The held request was in flight at the Ctrl-C, so its response, which
    // the server sends after the Ctrl-C, completes its execution.
    let result = child.wait_with_output().unwrap();
    log.extend(events.iter());
    let messages = messages(&log);
    assert_eq!(result.status.code(), Some(130), "{messages:#?}");
    let entities = entities_by_id(&result.stdout);
    let mut expected = vec![
        serde_json::json!({"id": held_id, "status": "ok"}),
        serde_json::json!({"id": waiting_id}),
    ];
    expected.sort_by_key(|entity| entity["id"].as_str().unwrap().to_string());
    assert_eq!(entities, expected);
    let url = server.url();
    let paused = messages.iter().any(|message| {
        message.starts_with("execution ")
            && message.ends_with(&format!(
                " paused at step \"Send\": POST {url}/claims/{waiting_id}: not sent: the run was interrupted \
                 while the request waited"
            ))
    });
    assert!(paused, "{messages:#?}");
    assert!(
        messages.iter().any(|message| message
            .ends_with(": 1 succeeded, 0 failed, 1 paused, 0 not resumed, 0 taken over by another process")),
        "{messages:#?}"
    );
    assert_eq!(
        targets_and_bodies(&server),
        vec![(format!("/claims/{held_id}"), expected_body(&held_id))]
    );

    let opened = SqliteStore::open(&store).unwrap();
    let mut statuses = Vec::new();
    for summary in opened.executions(None).unwrap() {
        let record = opened.execution(&summary.id).unwrap();
        let id = record.entity_before["id"].as_str().unwrap().to_string();
        statuses.push((id, summary.status));
    }
    statuses.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (held_id.clone(), ExecutionStatus::Succeeded),
        (waiting_id.to_string(), ExecutionStatus::Paused),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(statuses, expected);
}
