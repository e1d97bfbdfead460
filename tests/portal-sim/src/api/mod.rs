//! The sharing/rest operations, one module per concern, and the dispatch between them.

pub mod auth;
pub mod credits;
pub mod info;
pub mod notify;
pub mod portal;
pub mod reports;
pub mod usage;
pub mod users;

use axum::http::Method;

use crate::endpoint::Endpoint;
use crate::wire::{AgolError, Params, Reply, post_only_refusal};
use crate::world::{Caller, World};

/// What an operation needs to know about the call besides the world.
pub struct Ctx<'a> {
    /// Merged parameters.
    pub params: &'a Params,
    /// The authenticated caller.
    pub caller: Caller,
    /// HTTP method.
    pub method: &'a Method,
    /// Wall clock, epoch ms.
    pub now_ms: i64,
    /// This request's sequence number.
    pub seq: u64,
    /// Whether the request arrived over TLS.
    pub tls: bool,
    /// `http` or `https`, for URLs the simulator hands out.
    pub scheme: &'static str,
    /// The port the simulator listens on.
    pub port: u16,
    /// The `Host` the client used (`name:port`): URLs handed back point where it connected.
    pub host: String,
}

/// Runs one operation against the world.
pub fn dispatch(w: &mut World, ep: &Endpoint, ctx: &Ctx) -> Reply {
    if ep.post_only()
        && let Some(e) = post_only_refusal(ctx.method)
    {
        return e.into();
    }
    let r: Result<Reply, AgolError> = match ep {
        Endpoint::Root => Ok(info::root()),
        Endpoint::Info => Ok(info::info(ctx)),
        Endpoint::GenerateToken => Ok(auth::generate_token(w, ctx)),
        Endpoint::OAuthToken => Ok(auth::oauth_token(w, ctx)),
        Endpoint::OAuthAuthorize => auth::authorize(w, ctx),
        Endpoint::OAuthSignin => auth::signin(w, ctx),
        Endpoint::Roles => info::roles(w, ctx),
        Endpoint::Item(id) => reports::item(w, ctx, id),
        Endpoint::PortalSelf => Ok(portal::portal_self(w, ctx)),
        Endpoint::PortalUpdate => portal::update(w, ctx),
        Endpoint::OrgUsers => users::list(w, ctx),
        Endpoint::OrgUserSearch => users::search(w, ctx, true),
        Endpoint::CommunityUsers => users::search(w, ctx, false),
        Endpoint::User(u) => users::user(w, ctx, u),
        Endpoint::AssignCredits => credits::assign(w, ctx),
        Endpoint::UnassignCredits => credits::unassign(w, ctx),
        Endpoint::CreateNotification => notify::create(w, ctx),
        Endpoint::UserReport(u) => reports::create(w, ctx, u),
        Endpoint::ItemsStatus => reports::items_status(w, ctx),
        Endpoint::ItemStatus(o, id) => reports::item_status(w, ctx, o, id),
        Endpoint::ItemData(id) => reports::data(w, ctx, id),
        Endpoint::ItemDelete(o, id) => reports::delete(w, ctx, o, id),
        Endpoint::Usage => usage::usage(w, ctx),
        Endpoint::WrongPortal => Err(AgolError::forbidden()),
        Endpoint::Invalid => Err(AgolError {
            details: vec!["Invalid URL".into()],
            ..AgolError::new(400, "Invalid URL")
        }),
    };
    r.unwrap_or_else(Reply::Error)
}
