use super::*;

const NOW: u64 = 1_800_000_000;

fn owner() -> Identity {
    Identity::from_seed(&[1; 32])
}

fn member() -> Identity {
    Identity::from_seed(&[2; 32])
}

fn invite(roles: &[Role], caps: &[&str]) -> Invitation {
    Invitation::mint(
        &owner(),
        "lab",
        roles.to_vec(),
        caps.iter().map(|c| (*c).to_owned()).collect(),
        NOW + 3600,
    )
    .expect("valid")
}

fn check(c: &Credential) -> Result<&Grant, TrustError> {
    c.verify("lab", &owner().public(), &member().public(), NOW, None)
}

#[test]
fn a_redeemed_invitation_is_a_credential_the_pool_key_alone_verifies() {
    let inv = invite(&[Role::Submitter, Role::Worker], &["ocr"]);
    let token = inv.to_token();
    assert!(token.starts_with(TOKEN_PREFIX));
    let read = Invitation::from_token(&format!("  {}\n", token.as_str())).expect("reads back");
    let credential = read.redeem(&member().public());
    // Through JSON, as it travels.
    let json = serde_json::to_string(&credential).expect("json");
    let credential: Credential = serde_json::from_str(&json).expect("back");
    let grant = check(&credential).expect("valid");
    assert_eq!(grant.roles, vec![Role::Worker, Role::Submitter]);
    assert!(grant.allows("ocr") && !grant.allows("exec"));
    assert_eq!(grant.require(Role::Worker, ["ocr"].into_iter()), Ok(()));
    assert_eq!(
        grant.require(Role::Worker, ["exec"].into_iter()),
        Err(TrustError::Capability("exec".into()))
    );
    assert_eq!(
        grant.require(Role::Observer, std::iter::empty()),
        Err(TrustError::MissingRole(Role::Observer))
    );
}

#[test]
fn a_credential_is_refused_for_another_pool_issuer_member_or_time() {
    let credential = invite(&[Role::Worker], &[]).redeem(&member().public());
    let key = owner().public();
    assert!(matches!(
        credential.verify("other", &key, &member().public(), NOW, None),
        Err(TrustError::WrongPool { .. })
    ));
    let stranger = Identity::from_seed(&[9; 32]).public();
    assert_eq!(
        credential.verify("lab", &stranger, &member().public(), NOW, None),
        Err(TrustError::WrongIssuer(key))
    );
    assert_eq!(
        credential.verify("lab", &key, &stranger, NOW, None),
        Err(TrustError::NotYours(member().public()))
    );
    assert_eq!(
        credential.verify("lab", &key, &member().public(), NOW + 3600, None),
        Err(TrustError::Expired { at: NOW + 3600 })
    );
}

#[test]
fn a_changed_grant_or_a_credential_signed_by_a_member_is_forged() {
    let mut credential = invite(&[Role::Worker], &[]).redeem(&member().public());
    credential.endorsement.grant.roles = vec![Role::Worker, Role::Submitter];
    assert_eq!(
        check(&credential),
        Err(TrustError::Forged("the owner's signature"))
    );

    // A member cannot mint credentials for others: it holds no invite key.
    let credential = invite(&[Role::Worker], &[]).redeem(&member().public());
    let other = Identity::from_seed(&[3; 32]);
    let forged = Credential {
        member: other.public(),
        member_sig: member().sign(Purpose::Membership, b"anything"),
        ..credential
    };
    assert_eq!(
        forged.verify("lab", &owner().public(), &other.public(), NOW, None),
        Err(TrustError::Forged("the invitation's signature"))
    );
}

#[test]
fn a_token_must_be_whole() {
    let token = invite(&[Role::Worker], &[]).to_token();
    for bad in [
        "hello".to_owned(),
        format!("{TOKEN_PREFIX}!!!"),
        token[..token.len() - 10].to_owned(),
        format!("{TOKEN_PREFIX}{}", "A".repeat(20_000)),
    ] {
        assert!(
            matches!(Invitation::from_token(&bad), Err(TrustError::Invalid(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        Invitation::mint(&owner(), "lab", Vec::new(), Vec::new(), NOW),
        Err(TrustError::Invalid(_))
    ));
}

#[test]
fn revocations_withdraw_an_invitation_or_a_member_and_only_the_owner_signs_them() {
    let inv = invite(&[Role::Worker], &[]);
    let credential = inv.redeem(&member().public());
    let by_invite =
        Revocations::sign(&owner(), "lab", 1, vec![inv.key()], Vec::new()).expect("signed");
    let by_member =
        Revocations::sign(&owner(), "lab", 2, Vec::new(), vec![member().public()]).expect("signed");
    for list in [&by_invite, &by_member] {
        assert_eq!(list.verify("lab", &owner().public()), Ok(()));
        assert_eq!(
            credential.verify(
                "lab",
                &owner().public(),
                &member().public(),
                NOW,
                Some(list)
            ),
            Err(TrustError::Revoked)
        );
    }
    let mut tampered = by_member.clone();
    tampered.members.clear();
    assert_eq!(
        tampered.verify("lab", &owner().public()),
        Err(TrustError::Forged("the owner's signature"))
    );
    let by_member_self =
        Revocations::sign(&member(), "lab", 3, Vec::new(), Vec::new()).expect("signed");
    assert!(matches!(
        by_member_self.verify("lab", &owner().public()),
        Err(TrustError::WrongIssuer(_))
    ));
}
