-- Where an app's events go: 'webhook' (default), 'rabbitmq' or 'nats'.
ALTER TABLE apps ADD COLUMN sink TEXT;
