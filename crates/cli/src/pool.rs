//! `peer pool …`: the owner's side of a closed pool (its key, invitations,
//! revocations), and how a daemon or a one-off command shows its membership
//! (`--token`, `$JOBMESH_TOKEN`, `--open`).

use crate::out::outln;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use jobmesh_identity::{Identity, PublicKey};
use jobmesh_peer::{Invitation, Membership, Revocations, Role};

use crate::args::{self, PoolCmd, PoolDir, PoolInitArgs, PoolInviteArgs, PoolRevokeArgs};

/// The environment variable that may hold an invitation token's text.
const TOKEN_ENV: &str = "JOBMESH_TOKEN";

pub(crate) fn run(cmd: PoolCmd) -> anyhow::Result<u8> {
    match cmd {
        PoolCmd::Init(a) => init(a),
        PoolCmd::Invite(a) => invite(a),
        PoolCmd::Revoke(a) => revoke(a),
    }
}

/// What the flags say about membership, with the invitation read and
/// checked; `pool`: the pool asked for (`None`: the invitation's, or that of
/// the credential kept in `data_dir`, or `default`). Returns the membership
/// and the pool it is for.
pub(crate) fn membership(
    flags: &args::Membership,
    pool: Option<&str>,
    data_dir: Option<&Path>,
) -> anyhow::Result<(Membership, String)> {
    let token = match &flags.token {
        Some(path) => Some(read_token(path)?),
        None => std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty()),
    };
    match (token, flags.open) {
        (Some(_), true) => {
            bail!("--open and an invitation (--token or ${TOKEN_ENV}) contradict each other: pick one")
        }
        (Some(token), false) => {
            let invitation = Invitation::from_token(&token).context("--token")?;
            let invited = invitation.grant().pool.clone();
            if let Some(asked) = pool.filter(|p| *p != invited) {
                bail!("the invitation is for pool {invited:?}, not {asked:?}: drop --pool, or ask for an invitation to {asked:?}");
            }
            Ok((Membership::Invited(invitation), invited))
        }
        (None, true) => Ok((Membership::Open, pool.unwrap_or("default").to_owned())),
        (None, false) => {
            let kept = match (pool, data_dir) {
                (None, Some(dir)) => jobmesh_peer::store::credential(dir)
                    .map_err(anyhow::Error::msg)?
                    .map(|c| c.grant().pool.clone()),
                _ => None,
            };
            let pool = kept.unwrap_or_else(|| pool.unwrap_or("default").to_owned());
            Ok((Membership::Kept, pool))
        }
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut token = String::new();
        std::io::stdin()
            .read_to_string(&mut token)
            .context("reading the invitation from stdin")?;
        return Ok(token);
    }
    warn_if_exposed(path);
    std::fs::read_to_string(path).with_context(|| format!("--token {}", path.display()))
}

fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: {} can be read by other users (mode {mode:o}); anyone holding it can join the pool: chmod 600 it",
                path.display()
            );
        }
    }
}

fn pool_dir(dir: &PoolDir) -> anyhow::Result<PathBuf> {
    dir.pool_dir
        .clone()
        // `$XDG_CONFIG_HOME`, else `~/.config`.
        .or_else(|| dirs::config_dir().map(|c| c.join("jobmesh").join("pools")))
        .context("no pool dir: set --pool-dir (no XDG_CONFIG_HOME and no home directory)")
}

fn key_file(dir: &PoolDir, pool: &str) -> anyhow::Result<PathBuf> {
    // The same rule as the wire's pool names: no path separators.
    if pool.is_empty()
        || pool.len() > 64
        || !pool
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        || pool.starts_with('.')
    {
        bail!("{pool:?} is not a pool name: 1-64 letters, digits, _ . - (not starting with .)");
    }
    Ok(pool_dir(dir)?.join(format!("{pool}.key")))
}

/// The owner key of `pool`.
fn owner(dir: &PoolDir, pool: &str) -> anyhow::Result<Identity> {
    let path = key_file(dir, pool)?;
    Identity::load(&path).with_context(|| {
        format!(
            "the owner key of pool {pool:?} ({}); create it with `peer pool init {pool}` on the owner's machine",
            path.display()
        )
    })
}

fn init(args: PoolInitArgs) -> anyhow::Result<u8> {
    let path = key_file(&args.dir, &args.pool_name)?;
    let dir = path.parent().context("the key file's directory")?;
    create_private_dir(dir)?;
    let owner = Identity::generate();
    owner
        .store_as(&path, &format!("owner key of pool {}", args.pool_name))
        .with_context(|| {
            format!(
                "cannot create {} (does pool {:?} exist already?)",
                path.display(),
                args.pool_name
            )
        })?;
    let key = owner.public();
    if args.json {
        let out = serde_json::json!({"pool": args.pool_name, "pool_key": key, "key_file": path});
        outln!("{out}");
    } else {
        let n = &args.pool_name;
        outln!(
            "pool {n} created; its owner key is {} (keep it secret, back it up)",
            path.display()
        );
        outln!("pool key    {n}={key}");
        outln!();
        outln!("start the signal-server with:  signal-server --pool-key {n}={key}");
        outln!("invite a member with:          peer pool invite {n} --role worker --expires 30d > member.token");
    }
    Ok(0)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn invite(args: PoolInviteArgs) -> anyhow::Result<u8> {
    let owner = owner(&args.dir, &args.pool_name)?;
    let roles = args
        .role
        .iter()
        .map(|r| r.trim().parse::<Role>())
        .collect::<Result<Vec<_>, _>>()
        .context("--role")?;
    let capabilities: Vec<String> = args
        .capabilities
        .iter()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    for c in &capabilities {
        jobmesh_wire::Capability::new(c).context("--capabilities")?;
    }
    let expires = jobmesh_peer::store::unix_now().saturating_add(args.expires.as_secs());
    let invitation = Invitation::mint(&owner, &args.pool_name, roles, capabilities, expires)
        .context("the invitation")?;
    let token = invitation.to_token();
    match &args.out {
        Some(path) => {
            write_private(path, format!("{}\n", token.as_str()).as_bytes())?;
            eprintln!(
                "invitation to pool {} written to {} (invitation key {}, expires at {expires}); hand it over privately: anyone holding it can join",
                args.pool_name,
                path.display(),
                invitation.key()
            );
        }
        None => {
            outln!("{}", token.as_str());
            eprintln!(
                "invitation key {} (for `peer pool revoke --invite`); expires at {expires} (Unix time)",
                invitation.key()
            );
        }
    }
    Ok(0)
}

fn revoke(args: PoolRevokeArgs) -> anyhow::Result<u8> {
    let owner = owner(&args.dir, &args.pool_name)?;
    let keys = |raw: &[String], flag: &str| {
        raw.iter()
            .map(|k| k.trim().parse::<PublicKey>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("--{flag}"))
    };
    let path = key_file(&args.dir, &args.pool_name)?.with_extension("revoked.json");
    let mut list = match std::fs::read(&path) {
        Ok(bytes) => {
            let list: Revocations = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a revocation list", path.display()))?;
            list.verify(&args.pool_name, &owner.public())
                .with_context(|| format!("{}", path.display()))?;
            list
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Revocations::sign(&owner, &args.pool_name, 0, Vec::new(), Vec::new())?
        }
        Err(e) => return Err(e).context(format!("reading {}", path.display())),
    };
    list.invites.extend(keys(&args.invites, "invite")?);
    list.members.extend(keys(&args.members, "member")?);
    let list = Revocations::sign(
        &owner,
        &args.pool_name,
        list.seq + 1,
        list.invites,
        list.members,
    )?;
    let json = serde_json::to_vec_pretty(&list).context("encoding the list")?;
    write_private(&path, &json)?;
    outln!("{}", path.display());
    eprintln!(
        "revocation list {} of pool {}: {} invitations, {} members",
        list.seq,
        args.pool_name,
        list.invites.len(),
        list.members.len()
    );
    Ok(0)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
