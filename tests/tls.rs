//! HTTPS: the `flowrun` binary against a TLS server on 127.0.0.1 whose
//! certificate is signed by a certificate authority made for the test, and
//! the errors of `--cacert`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
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
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsServer {
    fn start(certificates: &Certificates, alpn: &[&[u8]], delay: Duration) -> TlsServer {
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
        let (received_by_server, connections_by_server) = (received.clone(), connections.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let connection = connections_by_server.fetch_add(1, Ordering::SeqCst) + 1;
                let acceptor = acceptor.clone();
                let received = received_by_server.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate ends the handshake.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let received = received.clone();
                        async move {
                            let version = request.version();
                            let target = request.uri().path().to_string();
                            let body = request.into_body().collect().await?.to_bytes().to_vec();
                            received.lock().unwrap().push(Received {
                                version,
                                connection,
                                target,
                                body,
                            });
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
            runtime: Some(runtime),
        }
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
