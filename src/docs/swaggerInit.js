// Starts Swagger UI on /docs. A file of its own, not an inline script, so the page's
// Content-Security-Policy can allow scripts from 'self' only.
window.addEventListener('load', () => {
  window.ui = window.SwaggerUIBundle({
    // relative to /docs, so the page also works behind a proxy that adds a path prefix
    url: 'openapi.json',
    dom_id: '#swagger-ui',
    layout: 'BaseLayout',
    deepLinking: true,
    docExpansion: 'list',
    defaultModelsExpandDepth: 0,
    displayRequestDuration: true,
    // no badge fetched from validator.swagger.io: the page makes no request outside this gateway
    validatorUrl: null,
    // Try it out keeps a pasted token in this tab's memory only
    persistAuthorization: false,
    tryItOutEnabled: false,
  });
});
