//! Closed-pool trust material from outside: an invitation token
//! (`Invitation::from_token`, what `peer --token` reads), and credential and
//! revocation-list JSON (`serde_json::from_slice` then `.verify`), all fed
//! the same bytes. Nothing may panic; a token that reads back is whole: it
//! re-encodes to a token that reads back the same, and redeems to a
//! credential that verifies.
#![no_main]

mod common;

use jobmesh_trust::{Credential, Invitation, Revocations, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(inv) = Invitation::from_token(text) {
            let grant = inv.grant().clone();
            let again = Invitation::from_token(&inv.to_token())
                .expect("a token made by to_token reads back");
            assert_eq!(again.grant(), &grant);
            assert_eq!(again.key(), inv.key());
            let member = common::REMOTE.public();
            let cred = inv.redeem(&member);
            let checked = cred.verify(&grant.pool, &grant.pool_key, &member, 0, None);
            if grant.expires > 0 {
                assert_eq!(checked, Ok(&grant), "a redeemed invitation verifies");
            }
        }
    }

    let revocations = serde_json::from_slice::<Revocations>(data).ok();
    if let Some(list) = &revocations {
        let _ = list.verify(common::POOL, &common::POOL_KEY);
        let _ = list.verify(&list.pool, &list.pool_key);
    }
    if let Ok(cred) = serde_json::from_slice::<Credential>(data) {
        let member = cred.member;
        let _ = cred.verify(common::POOL, &common::POOL_KEY, &member, common::NOW, None);
        // With the pool and keys it names itself, to reach the signatures,
        // the expiry and the revocation list (one object can be both).
        let grant = cred.grant().clone();
        let _ = cred.verify(
            &grant.pool,
            &grant.pool_key,
            &member,
            common::NOW,
            revocations.as_ref(),
        );
        let _ = cred.verify(
            &grant.pool,
            &grant.pool_key,
            &common::REMOTE.public(),
            0,
            None,
        );
        for role in [Role::Worker, Role::Submitter, Role::Observer] {
            let _ = grant.require(role, ["echo", "thumbnail"].into_iter());
        }
        if let Some(list) = &revocations {
            let _ = list.revokes(&cred);
        }
    }
});
