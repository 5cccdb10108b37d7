//! The command lines users run today, with our binary in `java`'s place:
//! `amazon_kclpy_helper.py --print_command --java X` (run in backticks) and
//! `kcl-bootstrap --java X -e`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::{create_stream, kinesis_client, unique_name};

use crate::support::{
    Daemon, delivered_keys, events, kclpy_dir, node_modules, produce, produce_plain, properties,
    sample_records, venv_bin, wait_events, work_dir,
};

const LIMIT: Duration = Duration::from_secs(60);
const KCL_MULTILANG: &str = env!("CARGO_BIN_EXE_kcl-multilang");

fn keys(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_amazon_kclpy_helper_prints_runs_the_sample() {
    let stream = unique_name("ml-helper");
    let application = unique_name("ml-helper-app");
    create_stream(&kinesis_client().await, &stream, 1).await;
    let expected = keys("helper", 10);
    produce(&stream, &expected).await;
    let kclpy = kclpy_dir();
    let dir = work_dir(&application);
    std::fs::write(
        dir.join("sample.properties"),
        properties("sample_kclpy_app.py", &stream, &application, &[]),
    )
    .unwrap();
    let printed = Command::new(integration_tests::python())
        .arg(kclpy.join("samples/amazon_kclpy_helper.py"))
        .args(["--print_command", "--java", KCL_MULTILANG])
        .args(["--properties", "sample.properties", "-l", "logback.xml"])
        .env("PYTHONPATH", &kclpy)
        .current_dir(&dir)
        .output()
        .expect("the helper runs");
    assert!(printed.status.success(), "{printed:?}");
    let command_line = String::from_utf8(printed.stdout).unwrap().trim().to_owned();
    assert!(
        command_line.starts_with(&format!("{KCL_MULTILANG} -cp "))
            && command_line.contains("software.amazon.kinesis.multilang.MultiLangDaemon --properties-file sample.properties --log-configuration logback.xml"),
        "{command_line}"
    );
    // As users run it: `$(amazon_kclpy_helper.py --print_command ...)`.
    let pythonpath = kclpy.display().to_string();
    let mut daemon = Daemon::spawn(
        Command::new("sh").args(["-c", &format!("exec {command_line}")]),
        &dir,
        &[kclpy.join("samples"), venv_bin()],
        &[("PYTHONPATH", &pythonpath), ("PYTHONUNBUFFERED", "1")],
    );
    daemon
        .wait_for("every record printed by the sample", LIMIT, |stderr| {
            let printed: Vec<String> = sample_records(stderr)
                .into_iter()
                .map(|r| r.partition_key)
                .collect();
            expected.iter().all(|k| printed.contains(k))
        })
        .await;
    let (status, _) = daemon.terminate(LIMIT).await;
    let stderr = daemon.stderr();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(stderr.contains("--log-configuration ignored"), "{stderr}");
}

/// The pid of `parent`'s child process, once it has one.
async fn child_of(parent: u32) -> u32 {
    for _ in 0..200 {
        let output = Command::new("pgrep")
            .args(["-P", &parent.to_string()])
            .output()
            .expect("pgrep runs");
        if let Some(pid) = String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.trim().parse().ok())
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{parent} started no child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcl_bootstrap_with_java_pointing_at_us_runs_a_node_processor() {
    let stream = unique_name("ml-bootstrap");
    let application = unique_name("ml-bootstrap-app");
    create_stream(&kinesis_client().await, &stream, 1).await;
    let expected = keys("bootstrap", 10);
    produce_plain(&stream, &expected).await;
    let modules = node_modules();
    let dir = work_dir(&application);
    let processor =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/multilang/children/node_processor.js");
    std::fs::write(
        dir.join("sample.properties"),
        properties(
            &format!("node {}", processor.display()),
            &stream,
            &application,
            &[],
        ),
    )
    .unwrap();
    // kcl-bootstrap downloads the Java jars before it starts `java`, skipping files that
    // exist: placeholders, so it needs no Maven (our daemon reads none of them).
    let jars = dir.join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let made = Command::new("node")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/multilang/children/placeholder_jars.js"),
        )
        .arg(&jars)
        .env("NODE_PATH", &modules)
        .output()
        .expect("node runs");
    assert!(made.status.success(), "{made:?}");
    let events_path = dir.join("events.jsonl");
    let events_text = events_path.display().to_string();
    let modules_text = modules.display().to_string();
    let bootstrap = modules.join("aws-kcl/bin/kcl-bootstrap");
    let mut node = Daemon::spawn(
        Command::new("node")
            .arg(&bootstrap)
            .args([
                "--java",
                KCL_MULTILANG,
                "-e",
                "-p",
                "./sample.properties",
                "-c",
            ])
            .arg(&jars),
        &dir,
        &[],
        &[("EVENTS", &events_text), ("NODE_PATH", &modules_text)],
    );
    wait_events(&mut node, &events_path, "every record", LIMIT, |events| {
        let delivered = delivered_keys(events);
        expected.iter().all(|k| delivered.contains(k))
    })
    .await;
    // SIGTERM goes to the daemon (as it would to java); node exits with it.
    let daemon = child_of(node.pid()).await;
    let cmdline = std::fs::read(format!("/proc/{daemon}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        args.iter()
            .any(|a| a == "software.amazon.kinesis.multilang.MultiLangDaemon")
            && args.iter().any(|a| a == "-cp"),
        "the bootstrap's java command line: {args:?}"
    );
    let sent = Command::new("kill")
        .args(["-TERM", &daemon.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = node.wait_exit(LIMIT).await;
    assert!(status.success(), "{status}:\n{}", node.stderr());
    let events = events(&events_path);
    assert!(
        events.iter().any(|e| e["action"] == "shutdownRequested"),
        "{events:?}"
    );
}
