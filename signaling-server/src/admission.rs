//! Who may join which pool: the server's one decision about trust. Pure.
//!
//! A pool the server was given a key for is closed: a hello must carry a
//! credential that the pool's key verifies (`jobmesh_trust`), for the key
//! the hello proved, unexpired and not revoked, and granting the worker role
//! for every capability the hello offers. A pool without a key is open only
//! if the server runs in open mode; otherwise it admits nobody. A stranger
//! learns nothing from a refusal: an unknown pool, a missing credential and
//! a credential of another issuer get the same answer.

use std::collections::HashMap;

use jobmesh_identity::PublicKey;
use jobmesh_trust::{Revocations, Role};
use jobmesh_wire::signal::Hello;

/// The server's admission policy.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Closed pools: name → the owner's public key.
    pub pools: HashMap<String, PublicKey>,
    /// Whether a pool without a key admits anyone (development only).
    pub open: bool,
}

impl Admission {
    /// Open mode, no closed pools: any pool admits anyone.
    pub fn open() -> Self {
        Self {
            pools: HashMap::new(),
            open: true,
        }
    }

    /// Admits `hello` (whose key is proven) at Unix time `now`, or says why
    /// not, in words fit for the peer: it only learns more than "no" when
    /// its credential was genuinely issued for this pool.
    pub fn check(
        &self,
        hello: &Hello,
        now: u64,
        revoked: Option<&Revocations>,
    ) -> Result<(), String> {
        let pool = &hello.pool;
        let stranger = || {
            format!(
                "not admitted to pool {pool:?}: it admits only members with a valid credential (peer --token FILE, an invitation from the pool's owner)"
            )
        };
        let Some(key) = self.pools.get(pool) else {
            return if self.open { Ok(()) } else { Err(stranger()) };
        };
        let Some(credential) = &hello.credential else {
            return Err(stranger());
        };
        let genuine = credential.grant().pool == *pool && credential.grant().pool_key == *key;
        let checked = credential
            .verify(pool, key, &hello.key, now, revoked)
            .and_then(|grant| {
                if hello.capabilities.is_empty() {
                    Ok(())
                } else {
                    grant.require(Role::Worker, hello.capabilities.iter().map(|c| c.as_str()))
                }
            });
        match checked {
            Ok(()) => Ok(()),
            Err(e) if genuine => Err(format!(
                "not admitted to pool {pool:?}: this peer's credential is refused: {e}"
            )),
            Err(_) => Err(stranger()),
        }
    }
}

#[cfg(test)]
mod tests {
    use jobmesh_identity::Identity;
    use jobmesh_trust::Invitation;
    use jobmesh_wire::signal::Join;
    use jobmesh_wire::Capability;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn owner() -> Identity {
        Identity::from_seed(&[1; 32])
    }

    fn closed() -> Admission {
        Admission {
            pools: HashMap::from([("lab".to_owned(), owner().public())]),
            open: false,
        }
    }

    fn hello(
        pool: &str,
        caps: &[&str],
        credential: Option<jobmesh_trust::Credential>,
    ) -> (Identity, Hello) {
        let me = Identity::from_seed(&[2; 32]);
        let join = Join {
            name: "p".into(),
            pool: pool.into(),
            capabilities: caps
                .iter()
                .map(|c| Capability::new(c).expect("valid"))
                .collect(),
            slots: 1,
            credential,
            view: None,
        };
        let hello = join.hello(&me, "nonce");
        (me, hello)
    }

    fn credential(roles: &[Role], caps: &[&str], expires: u64) -> jobmesh_trust::Credential {
        let me = Identity::from_seed(&[2; 32]);
        Invitation::mint(
            &owner(),
            "lab",
            roles.to_vec(),
            caps.iter().map(|c| (*c).to_owned()).collect(),
            expires,
        )
        .expect("valid")
        .redeem(&me.public())
    }

    #[test]
    fn a_closed_pool_admits_a_member_and_tells_a_stranger_nothing() {
        let a = closed();
        let member = credential(&[Role::Worker], &["ocr"], NOW + 60);
        assert_eq!(
            a.check(&hello("lab", &["ocr"], Some(member)).1, NOW, None),
            Ok(())
        );
        // No credential, an unknown pool, a credential of another owner:
        // one answer.
        let none = a
            .check(&hello("lab", &[], None).1, NOW, None)
            .expect_err("refused");
        let unknown = a
            .check(&hello("other", &[], None).1, NOW, None)
            .expect_err("refused");
        let mut foreign = credential(&[Role::Worker], &[], NOW + 60);
        foreign.endorsement.grant.pool_key = Identity::from_seed(&[7; 32]).public();
        let foreign = a
            .check(&hello("lab", &[], Some(foreign)).1, NOW, None)
            .expect_err("refused");
        assert_eq!(none.replace("\"lab\"", "\"other\""), unknown);
        assert_eq!(none, foreign);
    }

    #[test]
    fn a_member_hears_why_its_own_credential_is_refused() {
        let a = closed();
        let expired = credential(&[Role::Worker], &[], NOW);
        let why = a
            .check(&hello("lab", &[], Some(expired)).1, NOW, None)
            .expect_err("expired");
        assert!(why.contains("expired"), "{why}");
        let submitter = credential(&[Role::Submitter], &[], NOW + 60);
        let why = a
            .check(&hello("lab", &["ocr"], Some(submitter)).1, NOW, None)
            .expect_err("no worker role");
        assert!(why.contains("worker role"), "{why}");
        let ocr_only = credential(&[Role::Worker], &["ocr"], NOW + 60);
        let why = a
            .check(&hello("lab", &["exec"], Some(ocr_only)).1, NOW, None)
            .expect_err("capability");
        assert!(why.contains("exec"), "{why}");
    }

    #[test]
    fn without_open_mode_a_pool_without_a_key_admits_nobody() {
        let a = Admission::default();
        assert!(a.check(&hello("dev", &[], None).1, NOW, None).is_err());
        assert_eq!(
            Admission::open().check(&hello("dev", &[], None).1, NOW, None),
            Ok(())
        );
    }
}
