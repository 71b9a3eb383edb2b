window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // The access token survives a page reload (it lives 15 minutes; renew it with
  // POST /api/v1/auth/refresh).
  persistAuthorization: true,
  tryItOutEnabled: true,
  displayRequestDuration: true,
  // No badge from swagger.io's online validator: it is an outside request the CSP blocks
  // (and the schema is checked by the test suite instead).
  validatorUrl: null,
});
