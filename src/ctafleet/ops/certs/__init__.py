"""TLS certificate expiry: `ctafleet ops certs check` reads the certificate each named host
serves and publishes its expiry for the CTAFleetTLSCertificateExpiring alert."""
