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
///
/// The first rule of the classification table whose reason and message match decides the
/// class. Pod status can override it: a last termination of `OOMKilled`
/// wins over crash-shaped rules (a `BackOff` after an OOM kill is an OOM
/// problem), and when no rule knows the reason at all, a non-zero exit code
/// makes it [`IncidentType::ContainerFailed`]. Never allocates.
pub fn classify(signal: &Signal<'_>) -> Classification {
    let message = crate::normalize::strip_aggregation_prefix(signal.message);
    let oom_killed = signal
        .last_termination_reason
        .is_some_and(|r| r.trim().eq_ignore_ascii_case("OOMKilled"));
    let oom = Classification {
        incident_type: IncidentType::OomKilled,
        severity: Severity::High,
    };

    match RULES.iter().find(|rule| rule.matches(signal.reason.trim(), message)) {
        Some(rule) if oom_killed && rule.status == Status::OomWins => oom,
        Some(rule) => Classification {
            incident_type: rule.incident_type,
            severity: rule.severity,
        },
        None if oom_killed => oom,
        None if signal.last_exit_code.is_some_and(|code| code != 0) => Classification {
            incident_type: IncidentType::ContainerFailed,
            severity: Severity::Medium,
        },
        None => Classification {
            incident_type: IncidentType::Other,
            severity: Severity::Medium,
        },
    }
}

/// What a rule requires of the message. Needles are lowercase ASCII and
/// compared ASCII-case-insensitively, so no lowercased copy is needed.
#[derive(Debug, Clone, Copy)]
enum Message {
    /// Anything.
    Any,
    /// Starts with this (after the aggregation prefix).
    Starts(&'static str),
    /// Contains at least one of these.
    Has(&'static [&'static str]),
    /// Contains every one of these.
    HasAll(&'static [&'static str]),
}

/// How Pod status may override a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// The event names its problem precisely; status does not change it.
    Event,
    /// The event describes a container dying or restarting, which an OOM
    /// kill explains better than the event does.
    OomWins,
}

/// One row of the classification table.
#[derive(Debug, Clone, Copy)]
struct Rule {
    /// Event reasons, compared ASCII-case-insensitively because kubelet
    /// versions and extended resources vary (`OutOfcpu`, `OutOfnvidia.com/gpu`).
    /// A trailing `*` matches any reason with that prefix.
    reasons: &'static [&'static str],
    message: Message,
    incident_type: IncidentType,
    severity: Severity,
    status: Status,
}

impl Rule {
    fn matches(&self, reason: &str, message: &str) -> bool {
        let reason_ok = self.reasons.iter().any(|name| match name.strip_suffix('*') {
            Some(prefix) => starts_with_ci(reason, prefix),
            None => name.eq_ignore_ascii_case(reason),
        });
        reason_ok
            && match self.message {
                Message::Any => true,
                Message::Starts(needle) => starts_with_ci(message, needle),
                Message::Has(needles) => needles.iter().any(|n| contains_ci(message, n)),
                Message::HasAll(needles) => needles.iter().all(|n| contains_ci(message, n)),
            }
    }
}

const fn rule(
    reasons: &'static [&'static str],
    message: Message,
    incident_type: IncidentType,
    severity: Severity,
    status: Status,
) -> Rule {
    Rule {
        reasons,
        message,
        incident_type,
        severity,
        status,
    }
}

use IncidentType as T;
use Message::{Any, Has, HasAll, Starts};
use Severity::{Critical, High, Low, Medium};
use Status::{Event, OomWins};

/// The classification table, evaluated top to bottom; the first match wins,
/// so specific message rules come before the catch-all for the same reason.
///
/// Severities follow [`Severity`]'s scale:
/// - **critical**: the node's disk is full (`no space left on device` while
///   mounting or creating a sandbox); every Pod on the node is at risk, not
///   just this one.
/// - **high**: a workload is down or lost work: crash loops, OOM kills,
///   evictions (a running Pod was killed), and a node whose network plugin is
///   not ready (no new Pod can start there).
/// - **medium**: degraded, retrying, or not running yet, and usually needs a
///   human to fix config: image pulls, config errors, scheduling, mounts,
///   sandboxes, failed kills, preemption (by design, but it cost a running
///   Pod), liveness and startup probes (which restart the container), kubelet
///   admission rejections (`OutOfcpu` …; the controller makes a new Pod).
/// - **low**: worth knowing and usually transient or cosmetic: readiness
///   probes (no restart, just out of the Service), a scheduling attempt for a
///   Pod that is being deleted, DNS search-line truncation, policy audit
///   reports, disabled logging.
///
/// Reasons this table does not know fall back to Pod status, then `Other`.
#[rustfmt::skip]
const RULES: &[Rule] = &[
    // Container lifecycle. `BackOff` is both the image-pull and the restart back-off.
    rule(&["BackOff"],                    Has(&["pulling image"]),  T::ImagePullBackOff,           Medium,   Event),
    rule(CRASH,                           Any,                      T::CrashLoopBackOff,           High,     OomWins),
    rule(OOM,                             Any,                      T::OomKilled,                  High,     Event),
    // `Failed` covers image pulls, config errors and start errors; the message says which.
    rule(&["Failed"],                     Has(IMAGE_PULL),          T::ImagePullBackOff,           Medium,   Event),
    rule(&["Failed"],                     Has(CONFIG_ERROR),        T::CreateContainerConfigError, Medium,   Event),
    rule(&["Failed"],                     HasAll(CONFIGMAP_GONE),   T::CreateContainerConfigError, Medium,   Event),
    rule(&["Failed"],                     HasAll(SECRET_GONE),      T::CreateContainerConfigError, Medium,   Event),
    rule(&["Failed"],                     Has(START_ERROR),         T::ContainerFailed,            Medium,   OomWins),
    // The same states as reasons (container waiting reasons, kubelet's image events).
    rule(IMAGE_PULL_REASONS,              Any,                      T::ImagePullBackOff,           Medium,   Event),
    rule(&["CreateContainerConfigError"], Any,                      T::CreateContainerConfigError, Medium,   Event),
    rule(START_ERROR_REASONS,             Any,                      T::ContainerFailed,            Medium,   OomWins),
    // Probes: liveness and startup failures restart the container, readiness only unroutes it.
    rule(PROBE,                           Starts("liveness probe"), T::Unhealthy,                  Medium,   Event),
    rule(PROBE,                           Starts("startup probe"),  T::Unhealthy,                  Medium,   Event),
    rule(PROBE,                           Any,                      T::Unhealthy,                  Low,      Event),
    // Scheduling; a Pod already being deleted does not need a node any more.
    rule(&["FailedScheduling"],           Has(POD_DELETING),        T::FailedScheduling,           Low,      Event),
    rule(&["FailedScheduling"],           Any,                      T::FailedScheduling,           Medium,   Event),
    // Volumes.
    rule(VOLUME,                          Has(DISK_FULL),           T::FailedMount,                Critical, Event),
    rule(VOLUME,                          Any,                      T::FailedMount,                Medium,   Event),
    // Pods taken away.
    rule(EVICTION,                        Any,                      T::Evicted,                    High,     Event),
    rule(PREEMPTION,                      Any,                      T::Preempted,                  Medium,   Event),
    // Runtime and network.
    rule(&["FailedCreatePodSandBox"],     Has(DISK_FULL),           T::FailedCreatePodSandBox,     Critical, Event),
    rule(&["FailedCreatePodSandBox"],     Any,                      T::FailedCreatePodSandBox,     Medium,   Event),
    rule(KILL,                            Any,                      T::FailedKillPod,              Medium,   Event),
    rule(&["NetworkNotReady"],            Any,                      T::NetworkNotReady,            High,     Event),
    // Known warnings with no class of their own, listed so that Pod status
    // (an unrelated earlier crash) cannot relabel them as ContainerFailed.
    // `OutOf*`: kubelet admission rejections (`OutOfcpu`, `OutOfmemory`, `OutOfpods` …).
    rule(&["OutOf*"],                     Any,                      T::Other,                      Medium,   Event),
    rule(OTHER_MEDIUM,                    Any,                      T::Other,                      Medium,   Event),
    rule(OTHER_LOW,                       Any,                      T::Other,                      Low,      Event),
];

/// Restart back-off, as an event reason or a container waiting reason.
const CRASH: &[&str] = &["BackOff", "CrashLoopBackOff"];

/// An OOM kill: the termination reason, or node-problem-detector's kernel event.
const OOM: &[&str] = &["OOMKilled", "OOMKilling"];

/// Reasons that are image-pull states themselves (Pod status waiting
/// reasons, kubelet's `InspectFailed` for an unparseable image name).
const IMAGE_PULL_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "InspectFailed",
];

/// Reasons for a container that could not be created or started, or was
/// killed because its postStart hook failed.
const START_ERROR_REASONS: &[&str] = &[
    "CreateContainerError",
    "RunContainerError",
    "ContainerCannotRun",
    "StartError",
    "FailedPostStartHook",
];

/// Probe failure reasons (`ProbeWarning` is a probe that passed with a warning).
const PROBE: &[&str] = &["Unhealthy", "ProbeWarning"];

/// Volume attach, mount and block-map failures.
const VOLUME: &[&str] = &["FailedMount", "FailedAttachVolume", "FailedMapVolume"];

/// Eviction by the kubelet (node pressure) or the taint manager (node gone).
const EVICTION: &[&str] = &["Evicted", "TaintManagerEviction"];

/// Preemption by the scheduler (`Preempted`) or by the kubelet for a critical Pod.
const PREEMPTION: &[&str] = &["Preempted", "Preempting"];

/// The runtime did not stop the Pod (in time).
const KILL: &[&str] = &["FailedKillPod", "ExceededGracePeriod"];

/// Warnings without a class that still cost a Pod or a volume something.
const OTHER_MEDIUM: &[&str] = &[
    "UnexpectedAdmissionError",
    "NodeAffinity",
    "TopologyAffinityError",
    "FailedSync",
    "VolumeResizeFailed",
    "FileSystemResizeFailed",
];

/// Warnings without a class that are informational or cosmetic.
const OTHER_LOW: &[&str] = &[
    "DNSConfigForming",
    "PolicyViolation",
    "LoggingDisabled",
    "FailedPreStopHook",
    "FailedToRetrieveImagePullSecret",
];

/// The node's disk is full.
const DISK_FULL: &[&str] = &["no space left on device"];

/// `Error: configmap "name" not found`.
const CONFIGMAP_GONE: &[&str] = &["configmap", "not found"];

/// `Error: secret "name" not found`.
const SECRET_GONE: &[&str] = &["secret", "not found"];

/// The scheduler gave up on a Pod that is being deleted anyway.
const POD_DELETING: &[&str] = &["skip schedule deleting pod"];

/// Messages of kubelet `Failed` events that mean the image cannot be pulled.
const IMAGE_PULL: &[&str] = &[
    "errimagepull",
    "imagepullbackoff",
    "failed to pull image",
    "invalidimagename",
    "errimageneverpull",
    "imageinspecterror",
    "errregistryunavailable",
    "couldn't parse image reference",
    "not present with pull policy",
];

/// Messages of kubelet `Failed` events that mean the container's
/// configuration cannot be built (kubelet's `CreateContainerConfigError`).
const CONFIG_ERROR: &[&str] = &[
    "createcontainerconfigerror",
    "couldn't find key",
    "runasnonroot",
    "failed to prepare subpath",
    "failed to sync configmap cache",
    "failed to sync secret cache",
];

/// Messages of kubelet `Failed` events that mean the runtime could not create
/// or start the container (`CreateContainerError`, `RunContainerError`).
const START_ERROR: &[&str] = &[
    "createcontainererror",
    "runcontainererror",
    "failed to create container",
    "failed to start container",
    "failed to create containerd task",
    "oci runtime",
    "starting container process",
];

/// `haystack.starts_with(needle)`, ASCII-case-insensitively.
fn starts_with_ci(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .get(..needle.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(needle.as_bytes()))
}

/// `haystack.contains(needle)`, ASCII-case-insensitively, without allocating.
///
/// Candidates are found with a vectorised search for the needle's first byte
/// in either case, and only those are compared in full: a message is scanned
/// once per needle instead of compared at every offset, which made this the
/// agent's most expensive function during warning storms.
fn contains_ci(haystack: &str, needle: &str) -> bool {
    let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
    let Some(&first) = needle.first() else {
        return true;
    };
    let Some(last_start) = haystack.len().checked_sub(needle.len()) else {
        return false;
    };
    memchr::memchr2_iter(
        first.to_ascii_lowercase(),
        first.to_ascii_uppercase(),
        &haystack[..=last_start],
    )
    .any(|at| haystack[at..at + needle.len()].eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests;
