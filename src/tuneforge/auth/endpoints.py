from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, status

from tuneforge.auth import service
from tuneforge.auth.deps import PrincipalCacheDep, PrincipalDep
from tuneforge.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    LoginRequest,
    MeResponse,
    OrganizationOut,
    RegisterRequest,
    RegisterResponse,
    TokenResponse,
    UserOut,
)
from tuneforge.db.session import SessionDep
from tuneforge.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    error_responses,
)
from tuneforge.state import SessionFactoryDep, SettingsDep

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/register",
    summary="Create a user, their organization and an owner membership",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisterResponse,
    responses=error_responses(Conflict),
)
def register(body: RegisterRequest, session: SessionDep, settings: SettingsDep) -> RegisterResponse:
    user, organization, token = service.register(session, body, settings)
    return RegisterResponse(
        access_token=token.access_token,
        expires_in=token.expires_in,
        user=UserOut.model_validate(user),
        organization=OrganizationOut.model_validate(organization),
    )


@router.post(
    "/login",
    summary="Exchange email and password for a bearer access token",
    response_model=TokenResponse,
    responses=error_responses(Unauthorized, TooManyRequests),
)
def login(
    body: LoginRequest,
    request: Request,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
) -> TokenResponse:
    address = request.client.host if request.client else None
    token = service.login(session_factory, settings, body.email, body.password, address)
    return TokenResponse(access_token=token.access_token, expires_in=token.expires_in)


@router.post(
    "/sign-out",
    summary="End every session of the signed-in user: their tokens stop working",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(Unauthorized, Forbidden),
)
def sign_out(
    principal: PrincipalDep,
    session: SessionDep,
    principals: PrincipalCacheDep,
    after_commit: BackgroundTasks,
) -> None:
    """Other processes may accept an old token for the credential cache's few seconds;
    this one forgets the user's sessions now and again once the change is committed."""
    principal.require_signed_in_user("Signing out")
    service.sign_out_everywhere(session, principal.user_id)
    principals.evict_sessions_of(principal.user_id)
    after_commit.add_task(principals.evict_sessions_of, principal.user_id)


@router.get(
    "/me",
    summary="The calling user, organization and role",
    response_model=MeResponse,
    responses=error_responses(Unauthorized),
)
def me(principal: PrincipalDep) -> MeResponse:
    return MeResponse(
        user=UserOut.model_validate(principal.user),
        organization=OrganizationOut.model_validate(principal.organization),
        role=principal.role,
    )


@router.post(
    "/api-keys",
    summary="Create an API key (the full key is returned only this once)",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses=error_responses(Unauthorized, Forbidden),
)
def create_api_key(
    body: ApiKeyCreate, principal: PrincipalDep, session: SessionDep
) -> ApiKeyCreated:
    principal.require_signed_in_user("Creating an API key")
    api_key, key = service.create_api_key(
        session, principal.organization_id, principal.user_id, body
    )
    return ApiKeyCreated(**ApiKeyOut.model_validate(api_key).model_dump(), key=key)


@router.get(
    "/api-keys",
    summary="List the organization's API keys (prefixes only)",
    response_model=list[ApiKeyOut],
    responses=error_responses(Unauthorized, Forbidden),
)
def list_api_keys(principal: PrincipalDep, session: SessionDep) -> list[ApiKeyOut]:
    principal.require_signed_in_user("Listing API keys")
    return [
        ApiKeyOut.model_validate(k)
        for k in service.list_api_keys(session, principal.organization_id)
    ]


@router.delete(
    "/api-keys/{api_key_id}",
    summary="Revoke an API key",
    response_model=ApiKeyOut,
    responses=error_responses(Unauthorized, Forbidden, NotFound),
)
def revoke_api_key(
    api_key_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    principals: PrincipalCacheDep,
    after_commit: BackgroundTasks,
) -> ApiKeyOut:
    """Evicts the key from this process's credential cache now, and again once the
    revocation is committed: a request in between would have cached it afresh."""
    principal.require_signed_in_user("Revoking an API key")
    api_key = service.revoke_api_key(session, principal.organization_id, api_key_id)
    principals.evict(api_key.key_hash)
    after_commit.add_task(principals.evict, api_key.key_hash)
    return ApiKeyOut.model_validate(api_key)
