-- An agent's Work WeChat UserID and Slack user id each name at most one
-- agent: a message from Work WeChat or Slack must find one agent to act for.
-- Work WeChat compares UserIDs ignoring case (they are ASCII: see
-- core.ValidWeComUserID), so its index is on lower(). The service checks
-- the same before a write, on the node serving the request; these indexes
-- hold across nodes.
--
-- A link two agents hold (only possible before this migration, when two
-- nodes set it at the same moment) stays with the agent that has the lowest
-- id, the one Work WeChat and Slack already acted for, and is cleared from
-- the others.

-- +goose Up
UPDATE agents SET wecom_userid = ''
    WHERE wecom_userid <> '' AND EXISTS (SELECT 1 FROM agents AS a
        WHERE a.id < agents.id AND lower(a.wecom_userid) = lower(agents.wecom_userid));
UPDATE agents SET slack_user = ''
    WHERE slack_user <> '' AND EXISTS (SELECT 1 FROM agents AS a
        WHERE a.id < agents.id AND a.slack_user = agents.slack_user);

CREATE UNIQUE INDEX agents_wecom_userid ON agents (lower(wecom_userid)) WHERE wecom_userid <> '';
CREATE UNIQUE INDEX agents_slack_user ON agents (slack_user) WHERE slack_user <> '';

-- +goose Down
DROP INDEX agents_slack_user;
DROP INDEX agents_wecom_userid;
