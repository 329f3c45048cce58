//! The Kubernetes manifests of `infrastructure/kubernetes/`, checked offline: the core resources
//! against the Kubernetes API schemas with the pinned `kubernetes-validate` (strict: unknown
//! fields fail), the KEDA ScaledObject and the references between the files with
//! `check_structure.py`, and the DAG the orchestrator serves there with the orchestrator's own
//! loader. Each checker is also shown a broken copy, which it must refuse.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use velostream_testkit::{kubernetes_validate_dir, repo_root};

/// Kubernetes versions the manifests must validate against: an older one still widely run, and
/// the newest the pinned kubernetes-validate carries.
const VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn manifests() -> PathBuf {
    repo_root().join("infrastructure/kubernetes")
}

fn python(args: &[&str], dir: &Path) -> Output {
    Command::new("python3")
        .args(args)
        .env("PYTHONPATH", kubernetes_validate_dir())
        .current_dir(dir)
        .output()
        .expect("running python3")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The kustomization's resources that are core Kubernetes kinds (all but KEDA's).
fn core_resources(dir: &Path) -> Vec<String> {
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let mut files = Vec::new();
    let mut in_resources = false;
    for line in kustomization.lines() {
        if !line.starts_with(' ') && !line.starts_with('-') {
            in_resources = line.trim_end() == "resources:";
            continue;
        }
        if in_resources && let Some(file) = line.trim().strip_prefix("- ") {
            let body = std::fs::read_to_string(dir.join(file)).unwrap();
            if !body.contains("apiVersion: keda.sh/") {
                files.push(file.to_owned());
            }
        }
    }
    files
}

fn validate(dir: &Path, version: &str) -> Output {
    let files = core_resources(dir);
    let mut args = vec!["-m", "kubernetes_validate", "--strict", "-k", version];
    args.extend(files.iter().map(String::as_str));
    python(&args, dir)
}

/// A change to a file's text.
type Edit = fn(String) -> String;

/// A copy of the manifests with `file` changed by `edit`.
fn broken_copy(file: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(manifests()).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            let to = tmp.path().join(entry.file_name());
            std::fs::create_dir(&to).unwrap();
            for inner in std::fs::read_dir(&path).unwrap().flatten() {
                std::fs::copy(inner.path(), to.join(inner.file_name())).unwrap();
            }
        } else {
            std::fs::copy(&path, tmp.path().join(entry.file_name())).unwrap();
        }
    }
    let target = tmp.path().join(file);
    let changed = edit(std::fs::read_to_string(&target).unwrap());
    std::fs::write(&target, changed).unwrap();
    tmp
}

#[test]
fn core_manifests_match_the_kubernetes_api_schemas() {
    let dir = manifests();
    let files = core_resources(&dir);
    for kind in [
        "consumer-deployment.yaml",
        "orchestrator-deployment.yaml",
        "orchestrator-pvc.yaml",
        "producer-job.yaml",
    ] {
        assert!(files.iter().any(|f| f == kind), "{kind} not in {files:?}");
    }
    for version in VERSIONS {
        let out = validate(&dir, version);
        assert!(out.status.success(), "Kubernetes {version}: {}", text(&out));
        let passed = String::from_utf8_lossy(&out.stdout)
            .matches(" passed for resource ")
            .count()
            + String::from_utf8_lossy(&out.stderr)
                .matches(" passed for resource ")
                .count();
        assert_eq!(passed, files.len(), "{}", text(&out));
    }
    // An unknown field fails strict validation.
    let broken = broken_copy("consumer-deployment.yaml", |s| {
        s.replace("  replicas: 1\n", "  replicas: 1\n  replica: 2\n")
    });
    let out = validate(broken.path(), VERSIONS[1]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("replica"), "{}", text(&out));
}

#[test]
fn the_scaled_object_and_the_references_between_files_are_sound() {
    let script = manifests().join("check_structure.py");
    let script = script.to_str().unwrap();
    let out = python(&[script], &manifests());
    assert!(out.status.success(), "{}", text(&out));

    // Each kind of mistake is caught.
    let cases: [(&str, Edit, &str); 6] = [
        (
            "consumer-scaledobject.yaml",
            |s| {
                s.replace(
                    "    name: velostream-consumer\n",
                    "    name: velostream-consumers\n",
                )
            },
            "scaleTargetRef Deployment/velostream-consumers is not among the resources",
        ),
        (
            "consumer-scaledobject.yaml",
            |s| s.replace("lagThreshold: \"1000000\"", "lagThreshold: 1000000"),
            "KEDA trigger metadata values are strings",
        ),
        (
            "consumer-scaledobject.yaml",
            |s| s.replace("maxReplicaCount: 6", "maxReplicaCount: 12"),
            "more than the topic's 6 partitions",
        ),
        (
            "consumer-deployment.yaml",
            |s| s.replace("key: CLICKHOUSE_PASSWORD", "key: CLICKHOUSE_PASSWD"),
            "secretKeyRef velostream-secrets/CLICKHOUSE_PASSWD does not exist",
        ),
        (
            "orchestrator-pvc.yaml",
            |s| s.replace("[\"ReadWriteMany\"]", "[\"ReadWriteOnce\"]"),
            "claim velostream-logs is ReadWriteOnce, but pods may run together (2 replicas)",
        ),
        (
            "orchestrator-deployment.yaml",
            |s| s.replace("fieldPath: metadata.name", "fieldPath: spec.nodeName"),
            "VELOSTREAM_HOST_NAME must be the pod's name",
        ),
    ];
    for (file, edit, expected) in cases {
        let broken = broken_copy(file, edit);
        let out = python(&[script, broken.path().to_str().unwrap()], broken.path());
        assert!(!out.status.success(), "{file}: {}", text(&out));
        assert!(text(&out).contains(expected), "{file}: {}", text(&out));
    }
}

#[test]
fn the_dag_served_in_the_cluster_loads() {
    let dag = orchestrator::dag::load(manifests().join("dags/velostream_cluster_check.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dag.id, "velostream_cluster_check");
    assert!(dag.schedule.is_some());
}
