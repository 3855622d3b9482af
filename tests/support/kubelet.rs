//! Plays the kubelet for one pod of a Deployment the operator owns: its container run as
//! a local process with the Deployment's own arguments and environment, its ConfigMap and
//! Secret volumes written into temporary directories.
//!
//! The pod's filesystem is played by those directories: each mount path, in the
//! arguments and in the mounted ConfigMap files (the campaigns file names the identity
//! mount), is replaced by the directory standing for it. Its network is played by free
//! loopback ports in place of the ports it listens on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, PodSpec, Secret, Volume};
use kube::{Api, Client};

use crate::issuer::temp_dir;
use crate::process::{Ports, Process};

/// The image's entrypoint (Dockerfile `ENTRYPOINT`): the issuer.
const ENTRYPOINT: &str = "firstcome-issuer";
/// The flags whose address the pod listens on, in the order of [`Ports`] (API, ops).
const LISTEN_FLAGS: [&str; 2] = ["--listen", "--ops-listen"];

/// One volume mount as the kubelet made it: where the container sees it, where it is.
struct Mount {
    path: String,
    dir: PathBuf,
    /// A ConfigMap's files are text that may name other mounts.
    config_map: bool,
}

/// Runs the first container of Deployment `name` in `namespace` as it is specified, and
/// waits until it is ready.
pub async fn run_pod_of(client: &Client, namespace: &str, name: &str) -> Process {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("the Deployment {name}: {e}"));
    let pod = deployment.spec.template.spec.expect("a pod template");
    let container = &pod.containers[0];
    assert!(
        container.command.is_none(),
        "the container runs the image's entrypoint"
    );
    let mounts = mount_volumes(client, namespace, &pod, container).await;
    let ports = Ports::free();
    let args = arguments(container, &mounts, ports);
    let env = environment(client, namespace, container).await;
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Process::start(ENTRYPOINT, &args, &env, ports, "/readyz").await
}

/// Writes every volume the container mounts into a directory of its own, then replaces
/// the mount paths the ConfigMap files name.
async fn mount_volumes(
    client: &Client,
    namespace: &str,
    pod: &PodSpec,
    container: &Container,
) -> Vec<Mount> {
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.as_deref().unwrap_or_default() {
        assert!(mount.sub_path.is_none(), "whole volumes only");
        let volume = (volumes.iter().find(|v| v.name == mount.name))
            .unwrap_or_else(|| panic!("the volume {} of a mount", mount.name));
        let (files, config_map) = volume_files(client, namespace, volume).await;
        let dir = temp_dir(&format!("volume-{}", volume.name));
        for (file, content) in files {
            std::fs::write(dir.join(file), content).unwrap();
        }
        mounts.push(Mount {
            path: mount.mount_path.clone(),
            dir,
            config_map,
        });
    }
    // Longest first, so /etc/firstcome-identity is not read as /etc/firstcome + "-identity".
    mounts.sort_by_key(|m| std::cmp::Reverse(m.path.len()));
    for mount in mounts.iter().filter(|m| m.config_map) {
        for entry in std::fs::read_dir(&mount.dir).unwrap() {
            let file = entry.unwrap().path();
            let text = std::fs::read_to_string(&file).unwrap();
            std::fs::write(&file, on_this_machine(&text, &mounts)).unwrap();
        }
    }
    mounts
}

/// The files a volume holds (one per key of its ConfigMap or Secret), and whether it is
/// a ConfigMap's.
async fn volume_files(
    client: &Client,
    namespace: &str,
    volume: &Volume,
) -> (BTreeMap<String, Vec<u8>>, bool) {
    if let Some(source) = &volume.config_map {
        assert!(source.items.is_none(), "every key of the ConfigMap");
        let map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get(&source.name)
            .await
            .unwrap_or_else(|e| panic!("the ConfigMap {}: {e}", source.name));
        let data = map.data.unwrap_or_default().into_iter();
        return (data.map(|(k, v)| (k, v.into_bytes())).collect(), true);
    }
    let source = (volume.secret.as_ref())
        .unwrap_or_else(|| panic!("volume {}: a ConfigMap or a Secret", volume.name));
    assert!(source.items.is_none(), "every key of the Secret");
    let name = source.secret_name.as_deref().expect("a Secret's name");
    let data = secret_data(client, namespace, name).await;
    (data.into_iter().map(|(k, v)| (k, v.0)).collect(), false)
}

async fn secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> BTreeMap<String, k8s_openapi::ByteString> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("the Secret {name}: {e}"));
    secret.data.unwrap_or_default()
}

/// `text` with each mount path replaced by the directory standing for it (`mounts`
/// longest path first).
fn on_this_machine(text: &str, mounts: &[Mount]) -> String {
    mounts.iter().fold(text.to_string(), |text, mount| {
        text.replace(&mount.path, &mount.dir.display().to_string())
    })
}

/// The container's arguments, on this machine: its mounts, and `ports` on 127.0.0.1 in
/// place of the addresses it listens on.
fn arguments(container: &Container, mounts: &[Mount], ports: Ports) -> Vec<String> {
    let mut args: Vec<String> = (container.args.iter().flatten())
        .map(|arg| on_this_machine(arg, mounts))
        .collect();
    for (flag, port) in LISTEN_FLAGS.iter().zip([ports.api, ports.ops]) {
        let at = (args.iter().position(|a| a == flag))
            .unwrap_or_else(|| panic!("the container's arguments have {flag}"));
        args[at + 1] = format!("127.0.0.1:{port}");
    }
    args
}

/// The container's environment: literal values, and values from Secret keys.
async fn environment(
    client: &Client,
    namespace: &str,
    container: &Container,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        env.push((var.name.clone(), value(client, namespace, var).await));
    }
    env
}

async fn value(client: &Client, namespace: &str, var: &EnvVar) -> String {
    if let Some(value) = &var.value {
        return value.clone();
    }
    let from = (var
        .value_from
        .as_ref()
        .and_then(|f| f.secret_key_ref.as_ref()))
    .unwrap_or_else(|| panic!("{}: a value or a Secret key", var.name));
    let data = secret_data(client, namespace, &from.name).await;
    let bytes = (data.get(&from.key))
        .unwrap_or_else(|| panic!("{}: key {} of Secret {}", var.name, from.key, from.name));
    String::from_utf8(bytes.0.clone()).unwrap()
}
