//! `sluice user ...`: SCRAM users through a node's admin API.

use anyhow::Result;
use sluice::admin::proto::{CreateUserRequest, DeleteUserRequest, ListUsersRequest, User};

use crate::cli::{UserArgs, UserCommand};

/// Runs one `sluice user` command and prints its outcome.
pub async fn run(args: UserArgs) -> Result<()> {
    let mut client = args.target.connect().await?;
    let refused = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    match args.command {
        UserCommand::Create { name, password, mechanism, iterations } => {
            let user = client.create_user(CreateUserRequest { name, password, mechanism, iterations }).await.map_err(refused)?.into_inner();
            println!("{}", describe(&user));
        }
        UserCommand::Delete { name, mechanism } => {
            let deleted = client.delete_user(DeleteUserRequest { name: name.clone(), mechanism: mechanism.unwrap_or_default() }).await.map_err(refused)?.into_inner();
            println!("{name}: {} credential(s) removed", deleted.removed);
        }
        UserCommand::List => {
            for user in client.list_users(ListUsersRequest {}).await.map_err(refused)?.into_inner().users {
                println!("{}", describe(&user));
            }
        }
    }
    Ok(())
}

/// `name  SCRAM-SHA-256(4096),SCRAM-SHA-512(8192)`.
fn describe(user: &User) -> String {
    let mechanisms: Vec<String> = user.credentials.iter().map(|c| format!("{}({})", c.mechanism, c.iterations)).collect();
    format!("{}  {}", user.name, mechanisms.join(","))
}
