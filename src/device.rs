//! Picking the compute device: burn-wgpu on a hardware GPU, else burn's `flex` CPU backend.
//!
//! Measured on these machines (issue 2): wgpu on a software adapter (lavapipe/llvmpipe) spends
//! minutes in autotune and is slower than flex, and without Vulkan drivers the GL fallback can
//! panic. So the probe runs once, on its own thread, behind `catch_unwind` and a timeout, and
//! `auto` takes wgpu only for a hardware adapter.

use crate::config::DeviceChoice;
use crate::error::{Error, Result};
use burn::prelude::*;
#[cfg(feature = "wgpu")]
use std::{sync::OnceLock, time::Duration};

/// A device ready to use, with what to tell the user about it.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    /// The plain (inference) device; `.autodiff()` of it trains.
    pub device: Device,
    /// "CPU (burn flex, 2 threads)" or "GPU: NVIDIA H200 (Vulkan)".
    pub description: String,
    pub is_gpu: bool,
}

/// What the wgpu probe found: an initialised device with its adapter, or why there is none.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
struct GpuProbe {
    device: Device,
    name: String,
    backend: String,
    software: bool,
}

#[cfg(feature = "wgpu")]
static PROBE: OnceLock<std::result::Result<GpuProbe, String>> = OnceLock::new();
#[cfg(feature = "wgpu")]
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(not(feature = "wgpu"))]
fn probe_gpu() -> std::result::Result<GpuProbe, String> {
    Err("this build has no GPU support (built without the `wgpu` feature)".to_string())
}

#[cfg(feature = "wgpu")]
fn probe_gpu() -> std::result::Result<GpuProbe, String> {
    PROBE
        .get_or_init(|| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let spawned = std::thread::Builder::new().name("wgpu-probe".into()).spawn(move || {
                let result = std::panic::catch_unwind(|| match Device::wgpu_options().init_with_setup() {
                    Ok((device, setup)) => {
                        let info = setup.adapter.get_info();
                        Ok(GpuProbe {
                            device,
                            name: info.name.clone(),
                            backend: format!("{:?}", info.backend),
                            software: info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu,
                        })
                    }
                    Err(e) => Err(format!("no usable wgpu adapter: {e}")),
                })
                .unwrap_or_else(|_| Err("the wgpu adapter failed while starting (it panicked)".to_string()));
                let _ = tx.send(result);
            });
            if let Err(e) = spawned {
                return Err(format!("cannot start the wgpu probe thread: {e}"));
            }
            rx.recv_timeout(PROBE_TIMEOUT)
                .unwrap_or_else(|_| Err(format!("the wgpu adapter did not answer within {}s", PROBE_TIMEOUT.as_secs())))
        })
        .clone()
}

pub fn cpu() -> ComputeDevice {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    ComputeDevice { device: Device::flex(), description: format!("CPU (burn flex, {threads} threads)"), is_gpu: false }
}

/// Resolves the user's choice. `gpu` fails with the reason when no hardware adapter is usable;
/// `auto` falls back to the CPU and says why in the description.
pub fn resolve(choice: DeviceChoice) -> Result<ComputeDevice> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Gpu => match probe_gpu() {
            Ok(p) if !p.software => Ok(gpu_device(p)),
            Ok(p) => Err(Error::Device(format!(
                "the only wgpu adapter is '{}', a software renderer: far slower than --device cpu; use cpu",
                p.name
            ))),
            Err(e) => Err(Error::Device(e)),
        },
        DeviceChoice::Auto => Ok(match probe_gpu() {
            Ok(p) if !p.software => gpu_device(p),
            Ok(p) => with_note(cpu(), &format!("wgpu adapter '{}' is a software renderer", p.name)),
            Err(e) => with_note(cpu(), &e),
        }),
    }
}

fn gpu_device(p: GpuProbe) -> ComputeDevice {
    ComputeDevice { device: p.device, description: format!("GPU: {} ({}, burn wgpu)", p.name, p.backend), is_gpu: true }
}

fn with_note(mut d: ComputeDevice, why: &str) -> ComputeDevice {
    d.description = format!("{}; no GPU: {why}", d.description);
    d
}
