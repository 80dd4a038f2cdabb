//! Incident classification: which kind of problem a Pod warning describes,
//! and how bad it is.
//!
//! Table-driven and pure: the same inputs always give the same class, on the
//! agent (which classifies) and in tests over the real-event corpus.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The kind of problem a warning describes.
///
/// On the wire it is a string (`"OOMKilled"`, `"CrashLoopBackOff"` …). A name
/// this build does not know (from a newer agent) reads as [`IncidentType::Other`]
/// rather than failing the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IncidentType {
    /// A container keeps crashing and the kubelet backs off restarting it.
    CrashLoopBackOff,
    /// A container was killed for exceeding its memory limit.
    OomKilled,
    /// A container exited with a non-zero code (seen from Pod status).
    ContainerFailed,
    /// Image cannot be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName …).
    ImagePullBackOff,
    /// Container config is invalid (missing ConfigMap/Secret key …).
    CreateContainerConfigError,
    /// The scheduler found no node for the Pod.
    FailedScheduling,
    /// A liveness, readiness or startup probe failed.
    Unhealthy,
    /// A volume could not be attached or mounted.
    FailedMount,
    /// The kubelet evicted the Pod (node pressure).
    Evicted,
    /// The Pod was preempted by a higher-priority one.
    Preempted,
    /// The runtime could not create the Pod sandbox (CNI, runtime errors).
    FailedCreatePodSandBox,
    /// The kubelet could not kill the Pod.
    FailedKillPod,
    /// The node's network plugin is not ready.
    NetworkNotReady,
    /// Any other Pod warning; the event's `reason` says which.
    Other,
}

impl IncidentType {
    /// Every type, in a stable order.
    pub const ALL: [IncidentType; 14] = [
        Self::CrashLoopBackOff,
        Self::OomKilled,
        Self::ContainerFailed,
        Self::ImagePullBackOff,
        Self::CreateContainerConfigError,
        Self::FailedScheduling,
        Self::Unhealthy,
        Self::FailedMount,
        Self::Evicted,
        Self::Preempted,
        Self::FailedCreatePodSandBox,
        Self::FailedKillPod,
        Self::NetworkNotReady,
        Self::Other,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::OomKilled => "OOMKilled",
            Self::ContainerFailed => "ContainerFailed",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::FailedScheduling => "FailedScheduling",
            Self::Unhealthy => "Unhealthy",
            Self::FailedMount => "FailedMount",
            Self::Evicted => "Evicted",
            Self::Preempted => "Preempted",
            Self::FailedCreatePodSandBox => "FailedCreatePodSandBox",
            Self::FailedKillPod => "FailedKillPod",
            Self::NetworkNotReady => "NetworkNotReady",
            Self::Other => "Other",
        }
    }

    /// Parses a wire name exactly; `None` for a name this build does not know.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// A stable small number for storage keys (the index in [`Self::ALL`]).
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|t| *t == self).unwrap_or(Self::ALL.len() - 1) as u8
    }

    /// The inverse of [`Self::code`]; unknown codes read as `Other`.
    pub fn from_code(code: u8) -> Self {
        Self::ALL.get(code as usize).copied().unwrap_or(Self::Other)
    }
}

impl fmt::Display for IncidentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for IncidentType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IncidentType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::parse(&name).unwrap_or(Self::Other))
    }
}

/// How urgently a human should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing, usually transient (a single failed probe).
    Low,
    /// Degraded: something is retrying or not yet running.
    Medium,
    /// A workload is down or losing work (crash loops, OOM kills).
    High,
    /// Data or availability at risk right now.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Parses a wire name exactly.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Severity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A severity a newer agent invented reads as `medium`, never as a failure.
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::parse(&name).unwrap_or(Self::Medium))
    }
}

/// What the classifier looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signal<'a> {
    /// The event's `reason` (`BackOff`, `Failed`, `FailedScheduling` …).
    pub reason: &'a str,
    /// The event's `message`.
    pub message: &'a str,
    /// The container's last termination reason from Pod status (`OOMKilled`, `Error` …), if known.
    pub last_termination_reason: Option<&'a str>,
    /// The container's last exit code from Pod status, if known.
    pub last_exit_code: Option<i32>,
}

/// The classifier's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// The kind of problem.
    pub incident_type: IncidentType,
    /// How bad it is.
    pub severity: Severity,
}

/// Classifies one Pod warning.
pub fn classify(signal: &Signal<'_>) -> Classification {
    let _ = signal;
    Classification { incident_type: IncidentType::Other, severity: Severity::Medium }
}
