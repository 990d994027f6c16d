-- Private domains (issue 6): a domain owned by an organization, usable only by its
-- spaces. Shared domains have no owner.

ALTER TABLE domains ADD COLUMN organization_guid TEXT;
