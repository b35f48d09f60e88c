//! The activity event types (`docs/reference/api.md` §7). Webhooks validate `eventTypes` against
//! [`EventType::ALL`].

use std::fmt;

macro_rules! event_types {
    ($($variant:ident = $name:literal, $entity:literal;)*) => {
        /// One activity event type; its wire name is [`EventType::as_str`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType {
            $($variant,)*
        }

        impl EventType {
            /// Every type, in the order of `docs/reference/api.md` §7.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            /// What `entityId` of an event of this type names.
            pub fn entity_type(self) -> &'static str {
                match self {
                    $(EventType::$variant => $entity,)*
                }
            }
        }
    };
}

event_types! {
    VmCreated = "vm.created", "vm";
    VmStarted = "vm.started", "vm";
    VmStopped = "vm.stopped", "vm";
    VmExited = "vm.exited", "vm";
    VmError = "vm.error", "vm";
    VmDeleted = "vm.deleted", "vm";
    VmPaused = "vm.paused", "vm";
    VmResumed = "vm.resumed", "vm";
    VmExpired = "vm.expired", "vm";
    ExecCommand = "exec.command", "vm";
    RunTsExecuted = "runTs.executed", "vm";
    RunJsExecuted = "runJs.executed", "vm";
    SnapshotCreated = "snapshot.created", "snapshot";
    SnapshotDeleted = "snapshot.deleted", "snapshot";
    SnapshotSeedReady = "snapshot.seed_ready", "snapshot";
    SnapshotSeedFailed = "snapshot.seed_failed", "image";
    ImageCreated = "image.created", "image";
    ImageKernelUploaded = "image.kernel_uploaded", "image";
    ImageRootfsUploaded = "image.rootfs_uploaded", "image";
    ImageInitrdUploaded = "image.initrd_uploaded", "image";
    ImageInitrdDeleted = "image.initrd_deleted", "image";
    ImageBundleUploaded = "image.bundle_uploaded", "image";
    ImageDefaultSet = "image.default_set", "image";
    ImageDeleted = "image.deleted", "image";
    ApikeyCreated = "apikey.created", "apikey";
    ApikeyRevoked = "apikey.revoked", "apikey";
    AuthLogin = "auth.login", "auth";
    AuthLoginFailed = "auth.login_failed", "auth";
    WebhookCreated = "webhook.created", "webhook";
    WebhookUpdated = "webhook.updated", "webhook";
    WebhookDeleted = "webhook.deleted", "webhook";
}

impl EventType {
    /// The type of a wire name, if it is one.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::EventType;

    #[test]
    fn names_round_trip_and_are_unique() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        let mut names: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EventType::ALL.len());
        assert_eq!(EventType::parse("vm.nothing"), None);
    }
}
