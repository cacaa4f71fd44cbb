use std::os::unix::fs::PermissionsExt;

use proptest::prelude::*;

use super::*;

#[test]
fn a_signature_verifies_only_for_its_key_its_purpose_and_its_message() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let sig = alice.sign(Purpose::ChannelBinding, b"fingerprints");
    let key = alice.public();
    assert!(key
        .verify(Purpose::ChannelBinding, b"fingerprints", &sig)
        .is_ok());
    assert!(key
        .verify(Purpose::SignalAdmission, b"fingerprints", &sig)
        .is_err());
    assert!(key
        .verify(Purpose::ChannelBinding, b"fingerprintz", &sig)
        .is_err());
    assert!(bob
        .public()
        .verify(Purpose::ChannelBinding, b"fingerprints", &sig)
        .is_err());
}

#[test]
fn the_peer_id_follows_from_the_key_alone() {
    let seed = [7u8; 32];
    let (a, b) = (Identity::from_seed(&seed), Identity::from_seed(&seed));
    assert_eq!(a.peer_id(), b.peer_id());
    assert_ne!(a.peer_id(), Identity::generate().peer_id());
    let id = a.peer_id().0;
    assert_eq!(id.get_version_num(), 8);
    assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
}

#[test]
fn a_key_file_is_created_owner_only_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(KEY_FILE);
    let (first, created) = Identity::load_or_create(&path).expect("created");
    assert!(created);
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(
        text.contains(&first.peer_id().to_string()),
        "the file names its peer id: {text}"
    );
    let (again, created) = Identity::load_or_create(&path).expect("loaded");
    assert!(!created);
    assert_eq!(again.public(), first.public());
}

#[test]
fn a_key_file_others_can_read_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(KEY_FILE);
    Identity::generate().store(&path).expect("stored");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = Identity::load(&path).expect_err("refused").to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn a_damaged_key_file_is_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (content, why) in [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("rsa:abcd\n", "does not start with"),
        ("ed25519:!!!\n", "not base64url"),
        ("ed25519:AAAA\n", "not 32 bytes"),
    ] {
        let path = dir.path().join("k");
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = Identity::load(&path).expect_err(content).to_string();
        assert!(err.contains(why), "{content:?}: {err}");
    }
}

#[test]
fn text_that_is_not_a_key_or_a_signature_is_refused() {
    for bad in [
        "",
        "short",
        &"A".repeat(44),
        "not base64 at all!!!!!!!!!!!!!!!!!!!!!!!!!",
    ] {
        assert!(bad.parse::<PublicKey>().is_err(), "{bad:?}");
        assert!(bad.parse::<Signature>().is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn keys_and_signatures_round_trip_through_text_and_json(seed in any::<[u8; 32]>(), msg in any::<Vec<u8>>()) {
        let id = Identity::from_seed(&seed);
        let key = id.public();
        let sig = id.sign(Purpose::SignalAdmission, &msg);
        prop_assert_eq!(key.to_string().len(), 43);
        prop_assert_eq!(key.to_string().parse::<PublicKey>().expect("parses"), key);
        prop_assert_eq!(sig.to_string().parse::<Signature>().expect("parses"), sig);
        let json = serde_json::to_string(&(key, sig)).expect("json");
        let (k, s): (PublicKey, Signature) = serde_json::from_str(&json).expect("back");
        prop_assert!(k.verify(Purpose::SignalAdmission, &msg, &s).is_ok());
    }

    #[test]
    fn any_text_parses_to_a_key_or_an_error_never_a_panic(s in ".{0,100}") {
        let _ = s.parse::<PublicKey>();
        let _ = s.parse::<Signature>();
    }
}
