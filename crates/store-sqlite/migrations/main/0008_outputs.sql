-- Step outputs (`$ROTA_OUTPUT`, issue 13): what a succeeded attempt wrote, as a JSON object
-- of KEY -> value; NULL for attempts without any (and every attempt written before).
ALTER TABLE attempts ADD COLUMN outputs TEXT;
