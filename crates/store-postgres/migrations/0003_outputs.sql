-- Step outputs (`$ROTA_OUTPUT`): what a succeeded attempt wrote, as JSON text of KEY -> value;
-- NULL for attempts without any. Additive: servers of schema 1 and 2 ignore it.
ALTER TABLE attempts ADD COLUMN outputs text;
