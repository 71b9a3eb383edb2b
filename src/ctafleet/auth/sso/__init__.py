"""Single sign-on with OpenID Connect (Microsoft Entra ID or any provider): each tenant's
provider configuration, the authorization code flow with PKCE, and the users it signs in."""
