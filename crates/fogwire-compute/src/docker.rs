//! Container tasks through the Docker Engine API (bollard).
//!
//! An image arrives as a tarball (what `docker save` writes; see
//! [`image_tarball`] to make one from files) and is loaded once per
//! tarball hash. Each task gets a fresh container: its arguments and
//! environment, stdin from its inputs, memory and CPU limits, at most 256
//! processes, every capability dropped, no new privileges, and no network
//! unless the job asks and the worker allows. stdout and stderr are
//! collected up to the output limit. Past its wall time the container is
//! killed (SIGKILL: a program that ignores SIGTERM cannot linger); on
//! every path, cancellation included, it is removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, ImportImageOptions, KillContainerOptions,
    RemoveContainerOptions, WaitContainerOptions,
};
use bytes::Bytes;
use fogwire_compute_proto::{Digest, ExitStatus, Limits};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::runtime::{ContainerRuntime, RunError, RunOutput};

/// The largest image tarball loaded.
pub const IMAGE_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// The label every task container carries (to find leftovers).
pub const LABEL: &str = "fogwire.task";

/// One container run.
struct ContainerTask {
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Bytes,
    limits: Limits,
    network: bool,
}

/// A Docker daemon, reached over its local socket.
pub struct Docker {
    client: bollard::Docker,
    image_bytes_max: usize,
    /// Images loaded, by tarball hash.
    images: Mutex<HashMap<Digest, String>>,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker").finish_non_exhaustive()
    }
}

fn docker_error(context: &str, error: impl std::fmt::Display) -> RunError {
    RunError::Docker(format!("{context}: {error}"))
}

impl Docker {
    /// Connects to the local daemon and agrees on an API version.
    pub async fn connect() -> Result<Docker, RunError> {
        Docker::connect_with_limit(IMAGE_BYTES_MAX).await
    }

    /// [`Docker::connect`], loading image tarballs of at most
    /// `image_bytes_max` bytes.
    pub async fn connect_with_limit(image_bytes_max: usize) -> Result<Docker, RunError> {
        let client = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| docker_error("cannot reach the Docker daemon", e))?;
        let client = client
            .negotiate_version()
            .await
            .map_err(|e| docker_error("the Docker daemon does not answer", e))?;
        client
            .ping()
            .await
            .map_err(|e| docker_error("the Docker daemon does not answer", e))?;
        Ok(Docker {
            client,
            image_bytes_max,
            images: Mutex::default(),
        })
    }

    /// Loads an image tarball, answering the image's name or id.
    pub async fn load(&self, tarball: Bytes) -> Result<String, RunError> {
        let digest = Digest::of(&tarball);
        if let Some(image) = self
            .images
            .lock()
            .ok()
            .and_then(|i| i.get(&digest).cloned())
        {
            return Ok(image);
        }
        if tarball.len() > self.image_bytes_max {
            return Err(RunError::Docker(format!(
                "the image tarball is {} bytes; at most {} are loaded",
                tarball.len(),
                self.image_bytes_max
            )));
        }
        let mut stream = self.client.import_image(
            ImportImageOptions {
                quiet: true,
                ..Default::default()
            },
            bollard::body_full(tarball),
            None,
        );
        let mut image = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| docker_error("the image tarball cannot be loaded", e))?;
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(RunError::Docker(format!(
                    "the image tarball cannot be loaded: {error}"
                )));
            }
            let text = info.stream.unwrap_or_default();
            for line in text.lines() {
                if let Some(name) = line
                    .strip_prefix("Loaded image: ")
                    .or_else(|| line.strip_prefix("Loaded image ID: "))
                {
                    image = Some(name.trim().to_owned());
                }
            }
        }
        let image = image.ok_or_else(|| {
            RunError::Docker("the image tarball cannot be loaded: it names no image".to_owned())
        })?;
        if let Ok(mut images) = self.images.lock() {
            images.insert(digest, image.clone());
        }
        Ok(image)
    }

    /// Containers of tasks that still exist (there should be none between
    /// tasks).
    pub async fn leftovers(&self) -> Result<Vec<String>, RunError> {
        let mut filters = HashMap::new();
        filters.insert("label".to_owned(), vec![LABEL.to_owned()]);
        let list = self
            .client
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| docker_error("cannot list containers", e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    async fn remove(&self, id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        if let Err(error) = self.client.remove_container(id, Some(options)).await {
            tracing::warn!(container = id, %error, "cannot remove a task container");
        }
    }

    async fn run_container(
        &self,
        image: &str,
        task: ContainerTask,
        id_out: &Mutex<Option<String>>,
    ) -> Result<RunOutput, RunError> {
        let ContainerTask {
            args,
            env,
            stdin,
            limits,
            network,
        } = task;
        let started = Instant::now();
        let host_config = HostConfig {
            memory: Some(i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX)),
            memory_swap: Some(i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX)),
            nano_cpus: Some(i64::from(limits.millicpus) * 1_000_000),
            pids_limit: Some(256),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            network_mode: Some(if network { "bridge" } else { "none" }.to_owned()),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: (!args.is_empty()).then_some(args),
            env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(HashMap::from([(LABEL.to_owned(), "1".to_owned())])),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            network_disabled: Some(!network),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = self
            .client
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| docker_error("cannot create the container", e))?;
        let id = created.id;
        if let Ok(mut slot) = id_out.lock() {
            *slot = Some(id.clone());
        }
        let attached = self
            .client
            .attach_container(
                &id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| docker_error("cannot attach to the container", e))?;
        self.client
            .start_container(&id, None)
            .await
            .map_err(|e| docker_error("cannot start the container", e))?;
        let mut input = attached.input;
        let feeding = tokio::spawn(async move {
            let _ = input.write_all(&stdin).await;
            let _ = input.shutdown().await;
        });
        let output_max = usize::try_from(limits.output_bytes).unwrap_or(usize::MAX);
        let mut output = attached.output;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut too_large = false;
        let wall = Duration::from_millis(limits.wall_time_ms);
        let collect = async {
            while let Some(item) = output.next().await {
                match item {
                    Ok(bollard::container::LogOutput::StdOut { message })
                    | Ok(bollard::container::LogOutput::Console { message }) => {
                        stdout.extend_from_slice(&message)
                    }
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        stderr.extend_from_slice(&message)
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
                if stdout.len() > output_max || stderr.len() > output_max {
                    too_large = true;
                    break;
                }
            }
        };
        let timed_out = tokio::time::timeout(wall, collect).await.is_err();
        feeding.abort();
        if timed_out || too_large {
            let _ = self
                .client
                .kill_container(
                    &id,
                    Some(KillContainerOptions {
                        signal: "SIGKILL".to_owned(),
                    }),
                )
                .await;
        }
        let mut waiting = self
            .client
            .wait_container(&id, None::<WaitContainerOptions>);
        let code = match tokio::time::timeout(Duration::from_secs(10), waiting.next()).await {
            Ok(Some(Ok(response))) => response.status_code,
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
            _ => -1,
        };
        let oom = self
            .client
            .inspect_container(&id, None)
            .await
            .ok()
            .and_then(|inspect| inspect.state)
            .and_then(|state| state.oom_killed)
            .unwrap_or(false);
        let status = if too_large {
            ExitStatus::OutputTooLarge
        } else if timed_out {
            ExitStatus::TimedOut
        } else if oom {
            ExitStatus::OutOfMemory
        } else {
            ExitStatus::Exited(i32::try_from(code).unwrap_or(-1))
        };
        stdout.truncate(output_max);
        stderr.truncate(output_max);
        Ok(RunOutput {
            status,
            stdout: Bytes::from(stdout),
            stderr: Bytes::from(stderr),
            fuel_used: 0,
            wall_time: started.elapsed(),
        })
    }
}

impl ContainerRuntime for Docker {
    fn run(
        self: Arc<Self>,
        image: Bytes,
        args: Vec<String>,
        env: Vec<(String, String)>,
        stdin: Bytes,
        limits: Limits,
        network: bool,
    ) -> fogwire_rpc::BoxFuture<Result<RunOutput, RunError>> {
        // The run is its own task, so that a caller that gives up (drops
        // this future) cannot skip the removal; it is told to stop by a
        // guard instead.
        let stop = tokio_util::sync::CancellationToken::new();
        let guard = stop.clone().drop_guard();
        let task = ContainerTask {
            args,
            env,
            stdin,
            limits,
            network,
        };
        let task = tokio::spawn(async move {
            let image = self.load(image).await?;
            let id = Mutex::new(None);
            let result = tokio::select! {
                result = self.run_container(&image, task, &id) => result,
                () = stop.cancelled() => Err(RunError::Docker("cancelled".to_owned())),
            };
            let id = id.lock().ok().and_then(|mut id| id.take());
            if let Some(id) = id {
                self.remove(&id).await;
            }
            result
        });
        Box::pin(async move {
            let result = task.await.map_err(|e| RunError::Internal(e.to_string()))?;
            drop(guard);
            result
        })
    }
}

/// A `docker save` tarball of a one-layer image holding `files` (path in
/// the image, mode, bytes), running `entrypoint`, named `name`.
pub fn image_tarball(
    name: &str,
    entrypoint: &[&str],
    files: &[(&str, u32, &[u8])],
) -> std::io::Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    for (path, mode, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        layer.append_data(&mut header, path.trim_start_matches('/'), *bytes)?;
    }
    let layer = layer.into_inner()?;
    let layer_sha = sha256_hex(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": entrypoint },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_sha}")] },
    });
    let config = serde_json::to_vec(&config).map_err(std::io::Error::other)?;
    let config_sha = sha256_hex(&config);
    let manifest = serde_json::json!([{
        "Config": format!("{config_sha}.json"),
        "RepoTags": [name],
        "Layers": [format!("{layer_sha}/layer.tar")],
    }]);
    let manifest = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;
    let mut image = tar::Builder::new(Vec::new());
    let mut add = |path: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        image.append_data(&mut header, path, bytes)
    };
    add(format!("{layer_sha}/layer.tar"), &layer)?;
    add(format!("{config_sha}.json"), &config)?;
    add("manifest.json".to_owned(), &manifest)?;
    image.into_inner()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}
