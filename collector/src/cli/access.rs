//! `token`, `agent`, `cluster` and `apikey` commands. Each runs the shared
//! operation of [`crate::admin`] on the store directly, or, while `serve`
//! holds the store, calls the same operation through the admin API with the
//! admin token of the data directory.

use crate::admin::{self, CreateApiKeyRequest, CreateTokenRequest};
use crate::auth::{Caller, Role};
use crate::config::{ApikeyCreateArgs, ClusterRemoveArgs, DataDirArg, IdArgs, RoleArg, TokenCreateArgs};
use crate::query::PageBody;
use crate::store::{Store, StoreError};
use crate::{ServeInfo, serve_info_path, store_path, tls};
use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Where a command acts: on the store itself, or through the running server.
enum Target {
    Local { store: Store, dir: std::path::PathBuf },
    Remote(Remote),
}

struct Remote {
    client: reqwest::Client,
    url: String,
    token: String,
}

const LOCAL: &str = "local";

impl Target {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        crate::create_private_dir(dir)?;
        match Store::open(&store_path(dir)) {
            Ok(store) => Ok(Self::Local {
                store,
                dir: dir.to_owned(),
            }),
            Err(StoreError::Locked(_)) => {
                let info: ServeInfo =
                    serde_json::from_slice(&std::fs::read(serve_info_path(dir)).with_context(|| {
                        format!(
                            "the store in {} is in use, but no running server is recorded",
                            dir.display()
                        )
                    })?)?;
                let token = std::fs::read_to_string(dir.join("admin.token")).context("reading the admin token")?;
                let ca = std::fs::read(tls::TlsPaths::new(dir).ca_cert()).context("reading the CA certificate")?;
                Ok(Self::Remote(Remote {
                    client: super::admin_client(&ca)?,
                    url: info.url,
                    token: token.trim().to_owned(),
                }))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Remote {
    async fn call<T: DeserializeOwned>(&self, path: &str, body: Option<&impl Serialize>) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.url);
        let request = match body {
            Some(body) => self.client.post(&url).json(body),
            None => self.client.get(&url),
        };
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("reaching the running collector at {}", self.url))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            bail!(
                "the collector refused ({status}): {}",
                body["error"]["message"].as_str().unwrap_or("no details")
            );
        }
        Ok(response.json().await?)
    }

    async fn list<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Vec<T>> {
        let page: PageBody<T> = self.call(path, None::<&()>).await?;
        Ok(page.items)
    }
}

fn time(t: Option<jiff::Timestamp>) -> String {
    t.map_or_else(|| "-".into(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// `token create`: prints the token once, the CA pin, and how to install the agent.
pub async fn token_create(args: TokenCreateArgs) -> anyhow::Result<()> {
    crate::names::validate_name("cluster", &args.cluster)?;
    crate::names::validate_name("tenant", &args.tenant)?;
    let req = CreateTokenRequest {
        cluster: args.cluster.clone(),
        tenant: Some(args.tenant.clone()),
        ttl_seconds: args.ttl.as_secs().max(1),
        uses: args.uses,
    };
    let dir = &args.data.data_dir;
    let (created, server_url) = match Target::open(dir)? {
        Target::Local { store, dir } => {
            let ca = tls::Ca::load_or_create(&tls::TlsPaths::new(&dir))?;
            let created = admin::create_token(&store, &Caller::local(), LOCAL, req, ca.pin()).await?;
            (created, None)
        }
        Target::Remote(remote) => (remote.call("/v1/admin/tokens", Some(&req)).await?, Some(remote.url)),
    };
    let url = args
        .collector_url
        .or(server_url)
        .unwrap_or_else(|| "https://COLLECTOR_HOST:8443".into());
    let uses = created.view.uses_total.map_or("unlimited".into(), |n| n.to_string());
    println!(
        "Enrollment token {} for cluster {} (tenant {}), valid until {}, uses: {uses}.",
        created.view.id,
        created.view.cluster,
        created.view.tenant,
        time(Some(created.view.expires))
    );
    println!("It is shown only now; the collector keeps only its hash.\n");
    println!("token:     {}", created.token);
    println!("CA pin:    {}", created.ca_pin);
    println!("collector: {url}\n");
    println!("Run the agent with them:\n");
    println!(
        "  podwarn-agent run --token {} --ca-pin {} --collector {url}\n",
        created.token, created.ca_pin
    );
    println!("or store them in the Secret the agent manifests read (kubectl apply -f -):\n");
    println!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: podwarn-agent\n  namespace: {ns}\ntype: Opaque\nstringData:\n  \
         PODWARN_TOKEN: \"{token}\"\n  PODWARN_CA_PIN: \"{pin}\"\n  PODWARN_COLLECTOR: \"{url}\"",
        ns = args.namespace,
        token = created.token,
        pin = created.ca_pin,
    );
    Ok(())
}

/// `token list`.
pub async fn token_list(args: DataDirArg) -> anyhow::Result<()> {
    let tokens = match Target::open(&args.data_dir)? {
        Target::Local { store, .. } => admin::list_tokens(&store, &Caller::local()).await?,
        Target::Remote(r) => r.list("/v1/admin/tokens").await?,
    };
    println!(
        "{:<16} {:<20} {:<12} {:<8} {:<9} {:<20} {:<20}",
        "ID", "CLUSTER", "TENANT", "STATE", "USES", "EXPIRES", "LAST USED"
    );
    for t in tokens {
        let uses = format!("{}/{}", t.used, t.uses_total.map_or("-".into(), |n| n.to_string()));
        println!(
            "{:<16} {:<20} {:<12} {:<8} {:<9} {:<20} {:<20}",
            t.id,
            t.cluster,
            t.tenant,
            t.state,
            uses,
            time(Some(t.expires)),
            time(t.last_used)
        );
    }
    Ok(())
}

/// `token revoke ID`.
pub async fn token_revoke(args: IdArgs) -> anyhow::Result<()> {
    let path = format!("/v1/admin/tokens/{}/revoke", urlencode(&args.id));
    let token = match Target::open(&args.data.data_dir)? {
        Target::Local { store, .. } => admin::revoke_token(&store, &Caller::local(), LOCAL, args.id).await?,
        Target::Remote(r) => r.call(&path, Some(&serde_json::json!({}))).await?,
    };
    println!("token {} revoked (cluster {})", token.id, token.cluster);
    Ok(())
}

/// `agent list`.
pub async fn agent_list(args: DataDirArg) -> anyhow::Result<()> {
    let agents = match Target::open(&args.data_dir)? {
        Target::Local { store, .. } => admin::list_agents(&store, &Caller::local()).await?,
        Target::Remote(r) => r.list("/v1/admin/agents").await?,
    };
    println!(
        "{:<20} {:<16} {:<12} {:<20} {:<10} {:<20} {:<20}",
        "CLUSTER", "AGENT", "TENANT", "LAST SEEN", "VERSION", "CERT EXPIRES", "REVOKED"
    );
    for a in agents {
        println!(
            "{:<20} {:<16} {:<12} {:<20} {:<10} {:<20} {:<20}",
            a.cluster,
            a.agent_id,
            a.tenant,
            time(a.last_seen),
            a.version.as_deref().unwrap_or("-"),
            time(Some(a.cert_expires)),
            time(a.revoked)
        );
    }
    Ok(())
}

/// `agent revoke ID`.
pub async fn agent_revoke(args: IdArgs) -> anyhow::Result<()> {
    let path = format!("/v1/admin/agents/{}/revoke", urlencode(&args.id));
    let agent = match Target::open(&args.data.data_dir)? {
        Target::Local { store, .. } => admin::revoke_agent(&store, &Caller::local(), LOCAL, args.id).await?,
        Target::Remote(r) => r.call(&path, Some(&serde_json::json!({}))).await?,
    };
    println!(
        "agent {} of cluster {} revoked: it is refused from its next request on",
        agent.agent_id, agent.cluster
    );
    Ok(())
}

/// `cluster remove NAME [--purge]`.
pub async fn cluster_remove(args: ClusterRemoveArgs) -> anyhow::Result<()> {
    let path = format!("/v1/admin/clusters/{}/remove", urlencode(&args.name));
    let body = serde_json::json!({ "purge": args.purge });
    let removed = match Target::open(&args.data.data_dir)? {
        Target::Local { store, .. } => {
            admin::remove_cluster(&store, &Caller::local(), LOCAL, args.name, args.purge).await?
        }
        Target::Remote(r) => r.call(&path, Some(&body)).await?,
    };
    println!(
        "cluster {} (tenant {}): {} agents and {} tokens revoked",
        removed.cluster, removed.tenant, removed.agents_revoked, removed.tokens_revoked
    );
    if args.purge {
        println!(
            "purged {} events and {} incidents",
            removed.events_deleted, removed.incidents_deleted
        );
    }
    Ok(())
}

/// `apikey create`: prints the key once.
pub async fn apikey_create(args: ApikeyCreateArgs) -> anyhow::Result<()> {
    if let Some(t) = &args.tenant {
        crate::names::validate_name("tenant", t)?;
    }
    let req = CreateApiKeyRequest {
        tenant: args.tenant,
        role: match args.role {
            RoleArg::Read => Role::Read,
            RoleArg::Admin => Role::Admin,
        },
    };
    let created: admin::CreatedApiKey = match Target::open(&args.data.data_dir)? {
        Target::Local { store, .. } => admin::create_apikey(&store, &Caller::local(), LOCAL, req).await?,
        Target::Remote(r) => r.call("/v1/admin/apikeys", Some(&req)).await?,
    };
    let scope = created.view.tenant.as_deref().unwrap_or("every tenant");
    println!(
        "API key {} ({} role, {scope}); shown only now, use it as `Authorization: Bearer <key>`:",
        created.view.id,
        format!("{:?}", created.view.role).to_lowercase()
    );
    println!("{}", created.key);
    Ok(())
}

/// `apikey list`.
pub async fn apikey_list(args: DataDirArg) -> anyhow::Result<()> {
    let keys = match Target::open(&args.data_dir)? {
        Target::Local { store, .. } => admin::list_apikeys(&store, &Caller::local()).await?,
        Target::Remote(r) => r.list("/v1/admin/apikeys").await?,
    };
    println!(
        "{:<14} {:<7} {:<16} {:<20} {:<20}",
        "ID", "ROLE", "TENANT", "CREATED", "REVOKED"
    );
    for k in keys {
        println!(
            "{:<14} {:<7} {:<16} {:<20} {:<20}",
            k.id,
            format!("{:?}", k.role).to_lowercase(),
            k.tenant.as_deref().unwrap_or("*"),
            time(Some(k.created)),
            time(k.revoked)
        );
    }
    Ok(())
}

/// `apikey revoke ID`.
pub async fn apikey_revoke(args: IdArgs) -> anyhow::Result<()> {
    let path = format!("/v1/admin/apikeys/{}/revoke", urlencode(&args.id));
    let key = match Target::open(&args.data.data_dir)? {
        Target::Local { store, .. } => admin::revoke_apikey(&store, &Caller::local(), LOCAL, args.id).await?,
        Target::Remote(r) => r.call(&path, Some(&serde_json::json!({}))).await?,
    };
    println!("API key {} revoked", key.id);
    Ok(())
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
