"""Where the service's own keys are kept outside its configuration (AWS Secrets Manager)."""
