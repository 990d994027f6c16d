//! The `local` CPI (`wfd cpi local`): VMs on this machine, as bosh-lite's Warden CPI
//! makes containers on one host. A VM is a process tree, `wfd agent` and the jobs it
//! supervises, in a process group of its own, with its base directory under
//! `<state dir>/vms/<cid>` (the agent's settings in `bosh/settings.json`, its ephemeral
//! data in `data/`, its persistent disk at `store`). A disk is a directory under
//! `<state dir>/disks/<cid>` that the VM it is attached to sees at `store` (a symlink),
//! so persistent data survives a recreate. VMs share their packages through
//! `<state dir>/packages` (each is unpacked once). A stemcell is a record: every VM runs the
//! agent of the `wfd` that runs this CPI. The VM's IP is whatever the director gives
//! it: loopback addresses (127.0.0.0/8) let each VM's jobs bind their own. With
//! [`Netns`] (`wfd cpi netns`) each VM is also in a network namespace of its own, on a
//! bridge, with that IP as its only address.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::netns::Netns;
use super::{
    Request, Response, CLOUD_ERROR, DISK_NOT_FOUND, NOT_IMPLEMENTED, VM_CREATION_FAILED,
    VM_NOT_FOUND,
};
use crate::agent::{Blobstore, Disks, Settings, SETTINGS_PATH};

/// The stemcell format this CPI boots.
pub const STEMCELL_FORMAT: &str = "wf-local";
/// How long a VM's processes get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The local CPI's configuration: where it keeps its state, and what it tells agents
/// (BOSH CPIs carry the agents' mbus and blobstore in their config too).
#[derive(Debug, Clone)]
pub struct LocalCpi {
    pub state_dir: PathBuf,
    /// The director's NATS, for the agents.
    pub mbus: String,
    /// The director's blobstore URL, where agents fetch packages.
    pub blobstore: String,
    /// Seconds between agent heartbeats.
    pub heartbeat_interval: f64,
    /// The program VMs run as their agent (`wfd`, called as `wfd agent --base-dir DIR`).
    pub agent_program: PathBuf,
    /// Each VM in a network namespace of its own (the `netns` CPI).
    pub netns: Option<Netns>,
}

type Outcome = Result<Value, Response>;

impl LocalCpi {
    /// Answers one CPI request.
    pub fn handle(&self, request: Request) -> Response {
        let args = &request.arguments;
        let outcome = match request.method.as_str() {
            "info" => Ok(
                json!({"api_version": super::API_VERSION, "stemcell_formats": [STEMCELL_FORMAT]}),
            ),
            "create_stemcell" => self.create_stemcell(args),
            "delete_stemcell" => self.delete_stemcell(args),
            "create_vm" => self.create_vm(args),
            "delete_vm" => self.delete_vm(args),
            "has_vm" => arg_str(args, 0).map(|cid| json!(self.vm_alive(&cid))),
            "reboot_vm" => self.reboot_vm(args),
            "set_vm_metadata" => self.set_vm_metadata(args),
            "create_disk" => self.create_disk(args),
            "delete_disk" => self.delete_disk(args),
            "has_disk" => arg_str(args, 0).map(|cid| json!(self.disk_dir(&cid).is_dir())),
            "attach_disk" => self.attach_disk(args),
            "detach_disk" => self.detach_disk(args),
            "get_disks" => self.get_disks(args),
            other => Err(Response::error(
                NOT_IMPLEMENTED,
                format!("the local CPI does not implement {other}"),
            )),
        };
        outcome.map_or_else(|error| error, Response::ok)
    }

    fn vm_dir(&self, cid: &str) -> PathBuf {
        self.state_dir.join("vms").join(cid)
    }

    fn disk_dir(&self, cid: &str) -> PathBuf {
        self.state_dir.join("disks").join(cid)
    }

    fn stemcell_dir(&self, cid: &str) -> PathBuf {
        self.state_dir.join("stemcells").join(cid)
    }

    fn create_stemcell(&self, args: &[Value]) -> Outcome {
        let image_path = arg_str(args, 0)?;
        let cid = format!("sc-{}", uuid::Uuid::new_v4());
        let dir = self.stemcell_dir(&cid);
        write_json(
            &dir.join("stemcell.json"),
            &json!({"image_path": image_path, "cloud_properties": args.get(1)}),
        )?;
        Ok(json!(cid))
    }

    fn delete_stemcell(&self, args: &[Value]) -> Outcome {
        let dir = self.stemcell_dir(&arg_str(args, 0)?);
        if dir.is_dir() {
            std::fs::remove_dir_all(&dir).map_err(io_error("deleting the stemcell"))?;
        }
        Ok(Value::Null)
    }

    fn create_vm(&self, args: &[Value]) -> Outcome {
        let agent_id = arg_str(args, 0)?;
        let stemcell = arg_str(args, 1)?;
        let networks = args.get(3).cloned().unwrap_or(json!({}));
        let env = args.get(5).cloned().unwrap_or(json!({}));
        if !self.stemcell_dir(&stemcell).is_dir() {
            return Err(Response::error(
                VM_CREATION_FAILED,
                format!("stemcell {stemcell} not found"),
            ));
        }
        let cid = format!("vm-{}", uuid::Uuid::new_v4());
        let dir = self.vm_dir(&cid);
        let settings = Settings {
            agent_id,
            vm: json!({"name": cid}),
            mbus: self.mbus.clone(),
            blobstores: vec![Blobstore {
                provider: "dav".into(),
                options: json!({"endpoint": self.blobstore}),
            }],
            networks: networks.clone(),
            disks: Disks::default(),
            env,
            heartbeat_interval: self.heartbeat_interval,
            package_cache: Some(self.state_dir.join("packages")),
        };
        write_json(&dir.join(SETTINGS_PATH), &settings)?;
        for sub in ["data", "sys/log"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io_error("creating the VM"))?;
        }
        let booted = match &self.netns {
            Some(netns) => netns.create(&cid, &networks),
            None => Ok(()),
        }
        .and_then(|()| self.boot(&cid, &dir));
        if let Err(e) = booted {
            if let Some(netns) = &self.netns {
                netns.delete(&cid);
            }
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Response::error(VM_CREATION_FAILED, e));
        }
        Ok(json!([cid, networks]))
    }

    /// Starts the VM's agent in a process group of its own; its pid (the group's id) goes
    /// to `pid`.
    fn boot(&self, cid: &str, dir: &Path) -> Result<(), String> {
        use std::os::unix::process::CommandExt as _;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("sys/log/agent.log"))
            .map_err(|e| format!("opening the agent log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        // The agent must not hold the director's pipes: stdio is its log only.
        let mut command = match &self.netns {
            Some(netns) => netns.command(cid, &self.agent_program),
            None => Command::new(&self.agent_program),
        };
        let child = command
            .arg("agent")
            .arg("--base-dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.agent_program.display()))?;
        std::fs::write(dir.join("pid"), child.id().to_string())
            .map_err(|e| format!("writing the pid: {e}"))
    }

    fn pgid(&self, cid: &str) -> Option<i32> {
        std::fs::read_to_string(self.vm_dir(cid).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|pid: &i32| *pid > 1)
    }

    /// Whether the VM exists and its process tree runs.
    fn vm_alive(&self, cid: &str) -> bool {
        self.pgid(cid).is_some_and(group_alive) && self.netns.as_ref().is_none_or(|n| n.exists(cid))
    }

    /// Stops the VM's process tree: SIGTERM, then SIGKILL after [`STOP_GRACE`].
    fn halt(&self, cid: &str) {
        let Some(pgid) = self.pgid(cid) else {
            return;
        };
        // SAFETY: kill only sends signals. SIGCONT lets frozen processes handle SIGTERM.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
            libc::kill(-pgid, libc::SIGCONT);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while group_alive(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }

    fn existing_vm(&self, args: &[Value]) -> Result<(String, PathBuf), Response> {
        let cid = arg_str(args, 0)?;
        let dir = self.vm_dir(&cid);
        if !dir.is_dir() {
            return Err(Response::error(VM_NOT_FOUND, format!("VM {cid} not found")));
        }
        Ok((cid, dir))
    }

    fn delete_vm(&self, args: &[Value]) -> Outcome {
        let (cid, dir) = self.existing_vm(args)?;
        self.halt(&cid);
        if let Some(netns) = &self.netns {
            netns.delete(&cid);
        }
        // `store` is a symlink: the disk behind it stays.
        std::fs::remove_dir_all(&dir).map_err(io_error("deleting the VM"))?;
        Ok(Value::Null)
    }

    fn reboot_vm(&self, args: &[Value]) -> Outcome {
        let (cid, dir) = self.existing_vm(args)?;
        self.halt(&cid);
        self.boot(&cid, &dir)
            .map_err(|e| Response::error(CLOUD_ERROR, e))?;
        Ok(Value::Null)
    }

    fn set_vm_metadata(&self, args: &[Value]) -> Outcome {
        let (_, dir) = self.existing_vm(args)?;
        write_json(
            &dir.join("metadata.json"),
            &args.get(1).cloned().unwrap_or_default(),
        )?;
        Ok(Value::Null)
    }

    fn create_disk(&self, args: &[Value]) -> Outcome {
        let size = args.first().and_then(Value::as_u64).ok_or_else(|| {
            Response::error(CLOUD_ERROR, "create_disk: size must be a number of MiB")
        })?;
        let cid = format!("disk-{}", uuid::Uuid::new_v4());
        let dir = self.disk_dir(&cid);
        std::fs::create_dir_all(dir.join("data")).map_err(io_error("creating the disk"))?;
        write_json(&dir.join("disk.json"), &json!({"size": size}))?;
        Ok(json!(cid))
    }

    fn delete_disk(&self, args: &[Value]) -> Outcome {
        let cid = arg_str(args, 0)?;
        let dir = self.disk_dir(&cid);
        if !dir.is_dir() {
            return Err(Response::error(
                DISK_NOT_FOUND,
                format!("disk {cid} not found"),
            ));
        }
        std::fs::remove_dir_all(&dir).map_err(io_error("deleting the disk"))?;
        Ok(Value::Null)
    }

    fn attach_disk(&self, args: &[Value]) -> Outcome {
        let (_, dir) = self.existing_vm(args)?;
        let disk = arg_str(args, 1)?;
        let data = self.disk_dir(&disk).join("data");
        if !data.is_dir() {
            return Err(Response::error(
                DISK_NOT_FOUND,
                format!("disk {disk} not found"),
            ));
        }
        let store = dir.join("store");
        let _ = std::fs::remove_file(&store);
        std::os::unix::fs::symlink(&data, &store).map_err(io_error("attaching the disk"))?;
        let path = store.display().to_string();
        self.update_settings(&dir, |s| {
            s.disks.persistent.insert(disk.clone(), json!(path));
        })?;
        Ok(json!(path))
    }

    fn detach_disk(&self, args: &[Value]) -> Outcome {
        let (_, dir) = self.existing_vm(args)?;
        let disk = arg_str(args, 1)?;
        let mut attached = false;
        self.update_settings(&dir, |s| {
            attached = s.disks.persistent.remove(&disk).is_some()
        })?;
        if !attached {
            return Err(Response::error(
                DISK_NOT_FOUND,
                format!("disk {disk} is not attached to this VM"),
            ));
        }
        let _ = std::fs::remove_file(dir.join("store"));
        Ok(Value::Null)
    }

    fn get_disks(&self, args: &[Value]) -> Outcome {
        let (_, dir) = self.existing_vm(args)?;
        let settings = read_settings(&dir)?;
        Ok(json!(settings.disks.persistent.keys().collect::<Vec<_>>()))
    }

    fn update_settings(
        &self,
        dir: &Path,
        change: impl FnOnce(&mut Settings),
    ) -> Result<(), Response> {
        let mut settings = read_settings(dir)?;
        change(&mut settings);
        write_json(&dir.join(SETTINGS_PATH), &settings)
    }
}

fn read_settings(dir: &Path) -> Result<Settings, Response> {
    let text = std::fs::read_to_string(dir.join(SETTINGS_PATH))
        .map_err(io_error("reading the agent settings"))?;
    serde_json::from_str(&text)
        .map_err(|e| Response::error(CLOUD_ERROR, format!("agent settings: {e}")))
}

/// Whether any process of group `pgid` is alive. Zombies do not count: a killed VM's
/// agent may wait for a parent that does not reap it (PID 1 in some containers).
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        matches!(fields.as_slice(), [state, _ppid, pgrp, ..]
            if *state != "Z" && *state != "X" && pgrp.parse() == Ok(pgid))
    })
}

fn arg_str(args: &[Value], index: usize) -> Result<String, Response> {
    args.get(index)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Response::error(CLOUD_ERROR, format!("argument {index} must be a string")))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), Response> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error("creating a directory"))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).expect("JSON"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io_error("writing state"))
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> Response {
    move |e| Response::error(CLOUD_ERROR, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(cpi: &LocalCpi, method: &str, arguments: Vec<Value>) -> Response {
        cpi.handle(Request {
            method: method.into(),
            arguments,
            context: json!({}),
            api_version: 2,
        })
    }

    fn ok(cpi: &LocalCpi, method: &str, arguments: Vec<Value>) -> Value {
        let response = call(cpi, method, arguments);
        assert!(response.error.is_none(), "{method}: {response:?}");
        response.result
    }

    #[test]
    fn vms_are_process_groups_and_disks_follow_them() {
        let state = tempfile::tempdir().unwrap();
        // A stand-in agent that ignores its arguments and sleeps.
        let agent = state.path().join("agent.sh");
        std::fs::write(&agent, "#!/bin/sh\nexec sleep 60\n").unwrap();
        let mut perms = std::fs::metadata(&agent).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&agent, perms).unwrap();
        let cpi = LocalCpi {
            state_dir: state.path().join("cpi"),
            mbus: "nats://127.0.0.1:4222".into(),
            blobstore: "http://127.0.0.1:25555/blobs".into(),
            heartbeat_interval: 1.0,
            agent_program: agent,
            netns: None,
        };
        assert_eq!(
            ok(&cpi, "info", vec![])["stemcell_formats"],
            json!(["wf-local"])
        );
        let stemcell = ok(&cpi, "create_stemcell", vec![json!("/img"), json!({})]);
        let networks = json!({"default": {"ip": "127.0.1.5", "type": "manual"}});
        let created = ok(
            &cpi,
            "create_vm",
            vec![
                json!("agent-1"),
                stemcell.clone(),
                json!({}),
                networks.clone(),
                json!([]),
                json!({}),
            ],
        );
        assert_eq!(created[1], networks);
        let vm = created[0].clone();
        assert_eq!(ok(&cpi, "has_vm", vec![vm.clone()]), json!(true));
        let settings = read_settings(&cpi.vm_dir(vm.as_str().unwrap())).unwrap();
        assert_eq!(settings.agent_id, "agent-1");
        assert_eq!(settings.networks, networks);

        let before = cpi.pgid(vm.as_str().unwrap()).unwrap();
        ok(&cpi, "reboot_vm", vec![vm.clone()]);
        let after = cpi.pgid(vm.as_str().unwrap()).unwrap();
        assert_ne!(before, after, "a new process tree");
        assert!(!group_alive(before));
        assert_eq!(ok(&cpi, "has_vm", vec![vm.clone()]), json!(true));
        ok(
            &cpi,
            "set_vm_metadata",
            vec![vm.clone(), json!({"name": "router/0"})],
        );

        let disk = ok(
            &cpi,
            "create_disk",
            vec![json!(1024), json!({}), vm.clone()],
        );
        ok(&cpi, "attach_disk", vec![vm.clone(), disk.clone()]);
        assert_eq!(ok(&cpi, "get_disks", vec![vm.clone()]), json!([disk]));
        let store = cpi.vm_dir(vm.as_str().unwrap()).join("store");
        std::fs::write(store.join("kept"), "data").unwrap();

        ok(&cpi, "delete_vm", vec![vm.clone()]);
        assert_eq!(ok(&cpi, "has_vm", vec![vm.clone()]), json!(false));
        let gone = call(&cpi, "delete_vm", vec![vm.clone()]);
        assert_eq!(gone.error.unwrap().kind, VM_NOT_FOUND);

        // The disk outlives the VM and shows its data to the next one.
        let vm2 = ok(
            &cpi,
            "create_vm",
            vec![
                json!("agent-2"),
                stemcell,
                json!({}),
                networks,
                json!([]),
                json!({}),
            ],
        )[0]
        .clone();
        ok(&cpi, "attach_disk", vec![vm2.clone(), disk.clone()]);
        let store = cpi.vm_dir(vm2.as_str().unwrap()).join("store");
        assert_eq!(std::fs::read_to_string(store.join("kept")).unwrap(), "data");
        ok(&cpi, "detach_disk", vec![vm2.clone(), disk.clone()]);
        assert_eq!(ok(&cpi, "get_disks", vec![vm2.clone()]), json!([]));
        ok(&cpi, "delete_vm", vec![vm2]);
        assert_eq!(ok(&cpi, "has_disk", vec![disk.clone()]), json!(true));
        ok(&cpi, "delete_disk", vec![disk.clone()]);
        assert_eq!(ok(&cpi, "has_disk", vec![disk]), json!(false));

        let missing = call(&cpi, "snapshot_disk", vec![json!("disk-x"), json!({})]);
        assert_eq!(missing.error.unwrap().kind, NOT_IMPLEMENTED);
        let no_stemcell = call(
            &cpi,
            "create_vm",
            vec![
                json!("a"),
                json!("sc-none"),
                json!({}),
                json!({}),
                json!([]),
                json!({}),
            ],
        );
        assert_eq!(no_stemcell.error.unwrap().kind, VM_CREATION_FAILED);
    }
}
