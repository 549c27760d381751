package apiserver

import (
	"net/http"

	"github.com/moatdb/moat/internal/apitype"
)

// routeTable is every route of the API. Anything not listed answers 404
// route_not_found; the OpenAPI document is generated from this table.
func (s *Server) routeTable() []Route {
	type (
		L = apitype.List[apitype.Project]
	)
	return []Route{
		{Method: "GET", Pattern: "/v1/health", Access: Public, Summary: "Liveness and the desired-state revision", Response: apitype.Health{}, Handler: s.health},
		{Method: "GET", Pattern: "/v1/openapi.json", Access: Public, Summary: "This API's OpenAPI 3 document", Handler: s.openapi},
		{Method: "GET", Pattern: "/v1/whoami", Access: Authenticated, Summary: "Show the caller's token: ID, role, project", Response: apitype.Identity{}, Handler: s.whoami},
		{Method: "GET", Pattern: "/v1/regions", Access: Authenticated, Summary: "List supported regions", Response: apitype.List[apitype.Region]{}, Handler: s.listRegions},

		{Method: "POST", Pattern: "/v1/projects", Action: "project.create", Access: Operator, Summary: "Create a project (operator)", Request: apitype.ProjectCreate{}, Response: apitype.Project{}, Status: http.StatusCreated, Handler: s.createProject},
		{Method: "GET", Pattern: "/v1/projects", Access: Authenticated, Summary: "List the projects the token may see", Response: L{}, Handler: s.listProjects},
		{Method: "GET", Pattern: "/v1/projects/{p}", Access: ProjectRead, Summary: "Get a project", Response: apitype.Project{}, Handler: s.getProject},
		{Method: "PUT", Pattern: "/v1/projects/{p}/quota", Action: "project.quota.set", Access: Operator, Summary: "Set a project's quotas (operator)", Request: apitype.QuotaUpdate{}, Response: apitype.Project{}, Handler: s.setQuota},

		{Method: "POST", Pattern: "/v1/tokens", Action: "token.create", Access: Operator, Summary: "Create a named operator token (operator; the secret is shown once)", Request: apitype.PlatformTokenCreate{}, Response: apitype.Token{}, Status: http.StatusCreated, Credential: true, Handler: s.createOperatorToken},
		{Method: "GET", Pattern: "/v1/tokens", Access: Operator, Summary: "List operator and agent tokens (operator; ?host= filters)", Response: apitype.List[apitype.Token]{}, Handler: s.listPlatformTokens},
		{Method: "DELETE", Pattern: "/v1/tokens/{id}", Action: "token.delete", Access: Operator, Summary: "Revoke an operator or agent token (operator)", Response: apitype.Token{}, Handler: s.deletePlatformToken},
		{Method: "POST", Pattern: "/v1/hosts", Action: "host.create", Access: Operator, Summary: "Register a host (operator); the answer holds its agent token, the secret shown once", Request: apitype.HostCreate{}, Response: apitype.HostCreated{}, Status: http.StatusCreated, Credential: true, Handler: s.createHost},
		{Method: "GET", Pattern: "/v1/hosts", Access: Operator, Summary: "List hosts: state, last heartbeat, agent version, capacity, load (operator)", Response: apitype.List[apitype.Host]{}, Handler: s.listHosts},
		{Method: "GET", Pattern: "/v1/hosts/{host}", Access: Operator, Summary: "Get a host (by name or ID) with its nodes (operator)", Response: apitype.Host{}, Handler: s.getHost},
		{Method: "PATCH", Pattern: "/v1/hosts/{host}", Action: "host.update", Access: Operator, Summary: "Change a host's capacity (operator; below its load it takes no new node)", Request: apitype.HostUpdate{}, Response: apitype.Host{}, Handler: s.updateHost},
		{Method: "POST", Pattern: "/v1/hosts/{host}/drain", Action: "host.drain", Access: Operator, Summary: "Drain a host: it takes no new node and its nodes are replaced elsewhere (operator)", Response: apitype.Host{}, Handler: s.drainHost},
		{Method: "POST", Pattern: "/v1/hosts/{host}/activate", Action: "host.activate", Access: Operator, Summary: "Activate a drained host: it takes new nodes again (operator)", Response: apitype.Host{}, Handler: s.activateHost},
		{Method: "DELETE", Pattern: "/v1/hosts/{host}", Action: "host.delete", Access: Operator, Summary: "Remove an empty host and revoke its agent tokens (operator; 409 while it has nodes)", Response: apitype.Host{}, Handler: s.deleteHost},
		{Method: "POST", Pattern: "/v1/hosts/{host}/tokens", Action: "token.create", Access: Operator, Summary: "Create an agent token bound to a host (operator; the secret is shown once)", Request: apitype.PlatformTokenCreate{}, Response: apitype.Token{}, Status: http.StatusCreated, Credential: true, Handler: s.createAgentToken},

		{Method: "POST", Pattern: "/v1/projects/{p}/tokens", Action: "token.create", Access: ProjectAdmin, Summary: "Create an API token (the secret is shown once)", Request: apitype.TokenCreate{}, Response: apitype.Token{}, Status: http.StatusCreated, Credential: true, Handler: s.createToken},
		{Method: "GET", Pattern: "/v1/projects/{p}/tokens", Access: ProjectAdmin, Summary: "List API tokens", Response: apitype.List[apitype.Token]{}, Handler: s.listTokens},
		{Method: "DELETE", Pattern: "/v1/projects/{p}/tokens/{id}", Action: "token.delete", Access: ProjectAdmin, Summary: "Revoke an API token", Response: apitype.Token{}, Handler: s.deleteToken},

		{Method: "POST", Pattern: "/v1/projects/{p}/vpcs", Action: "vpc.create", Access: ProjectWrite, Summary: "Create a VPC", Request: apitype.VPCCreate{}, Response: apitype.VPC{}, Status: http.StatusCreated, Handler: s.createVPC},
		{Method: "GET", Pattern: "/v1/projects/{p}/vpcs", Access: ProjectRead, Summary: "List VPCs", Response: apitype.List[apitype.VPC]{}, Handler: s.listVPCs},
		{Method: "GET", Pattern: "/v1/projects/{p}/vpcs/{id}", Access: ProjectRead, Summary: "Get a VPC", Response: apitype.VPC{}, Handler: s.getVPC},
		{Method: "DELETE", Pattern: "/v1/projects/{p}/vpcs/{id}", Action: "vpc.delete", Access: ProjectWrite, Summary: "Delete a VPC", Response: apitype.VPC{}, Status: http.StatusAccepted, Handler: s.deleteVPC},

		{Method: "POST", Pattern: "/v1/projects/{p}/peerings", Action: "peering.create", Access: ProjectWrite, Summary: "Create a peering connection", Request: apitype.PeeringCreate{}, Response: apitype.Peering{}, Status: http.StatusCreated, Handler: s.createPeering},
		{Method: "GET", Pattern: "/v1/projects/{p}/peerings", Access: ProjectRead, Summary: "List peering connections (?vpc_id= filters)", Response: apitype.List[apitype.Peering]{}, Handler: s.listPeerings},
		{Method: "GET", Pattern: "/v1/projects/{p}/peerings/{id}", Access: ProjectRead, Summary: "Get a peering connection", Response: apitype.Peering{}, Handler: s.getPeering},
		{Method: "DELETE", Pattern: "/v1/projects/{p}/peerings/{id}", Action: "peering.delete", Access: ProjectWrite, Summary: "Delete a peering connection", Response: apitype.Peering{}, Status: http.StatusAccepted, Handler: s.deletePeering},

		{Method: "POST", Pattern: "/v1/projects/{p}/services", Action: "service.create", Access: ProjectWrite, Summary: "Create a service", Request: apitype.ServiceCreate{}, Response: apitype.Service{}, Status: http.StatusCreated, Handler: s.createService},
		{Method: "GET", Pattern: "/v1/projects/{p}/services", Access: ProjectRead, Summary: "List services", Response: apitype.List[apitype.Service]{}, Handler: s.listServices},
		{Method: "GET", Pattern: "/v1/projects/{p}/services/{id}", Access: ProjectRead, Summary: "Get a service", Response: apitype.Service{}, Handler: s.getService},
		{Method: "DELETE", Pattern: "/v1/projects/{p}/services/{id}", Action: "service.delete", Access: ProjectWrite, Summary: "Delete a service, wipe its nodes and delete its backups", Response: apitype.Service{}, Status: http.StatusAccepted, Handler: s.deleteService},
		{Method: "GET", Pattern: "/v1/projects/{p}/services/{id}/allowlist", Access: ProjectRead, Summary: "Get a service's allowlist (ETag)", Response: apitype.Allowlist{}, Handler: s.getAllowlist},
		{Method: "PUT", Pattern: "/v1/projects/{p}/services/{id}/allowlist", Action: "service.allowlist.set", Access: ProjectWrite, Summary: "Replace a service's allowlist (If-Match)", Request: apitype.AllowlistUpdate{}, Response: apitype.Allowlist{}, Handler: s.putAllowlist},
		{Method: "POST", Pattern: "/v1/projects/{p}/services/{id}/attach", Action: "service.attach", Access: ProjectWrite, Summary: "Attach a service to a VPC, or move it to another (asynchronous)", Request: apitype.AttachRequest{}, Response: apitype.Operation{}, Status: http.StatusAccepted, Handler: s.attachService},
		{Method: "POST", Pattern: "/v1/projects/{p}/services/{id}/detach", Action: "service.detach", Access: ProjectWrite, Summary: "Detach a service from its VPC (asynchronous)", Response: apitype.Operation{}, Status: http.StatusAccepted, Handler: s.detachService},

		{Method: "POST", Pattern: "/v1/projects/{p}/services/{id}/failover", Action: "service.failover", Access: ProjectWrite, Summary: "Fail the service over: fence its primary and promote the replica with the most WAL; the old primary is replaced (asynchronous; 409 for a 1-node service)", Response: apitype.Operation{}, Status: http.StatusAccepted, Handler: s.failoverService},
		{Method: "PATCH", Pattern: "/v1/projects/{p}/services/{id}", Action: "service.update", Access: ProjectWrite, Summary: "Change a service's PostgreSQL settings (reload-only ones in force at once; those that need a restart pending until an upgrade: 200 with the service) and/or resize it to 1, 2 or 3 nodes by rolling forward: new nodes catch up, leaving nodes are wiped, no node is reused (202 with the operation; 409 during another operation or when the region cannot place the nodes)", Request: apitype.ServiceUpdate{}, Response: apitype.Service{}, Accepted: apitype.Operation{}, Handler: s.updateService},
		{Method: "POST", Pattern: "/v1/projects/{p}/services/{id}/upgrade", Action: "service.upgrade", Access: ProjectWrite, Summary: "Move a service to fresh nodes, which start with its settings pending a restart: as many new nodes catch up, the primary switches over (writes pause at most a second), the old nodes are wiped (asynchronous)", Response: apitype.Operation{}, Status: http.StatusAccepted, Handler: s.upgradeService},
		{Method: "GET", Pattern: "/v1/projects/{p}/services/{id}/backups", Access: ProjectRead, Summary: "List a service's base backups (it can be restored to any time after the end of one)", Response: apitype.List[apitype.Backup]{}, Handler: s.listBackups},
		{Method: "POST", Pattern: "/v1/projects/{p}/services/{id}/backups", Action: "service.backup.create", Access: ProjectWrite, Summary: "Take a base backup now (asynchronous)", Response: apitype.Operation{}, Status: http.StatusAccepted, Handler: s.createBackup},

		{Method: "POST", Pattern: "/v1/projects/{p}/services/{id}/password", Action: "service.password.reset", Access: ProjectAdmin, Summary: "Reset the service admin's password (shown once)", Response: apitype.PasswordReset{}, Credential: true, Handler: s.resetPassword},
		{Method: "GET", Pattern: "/v1/projects/{p}/metrics", Access: ProjectRead, Summary: "Get the PostgreSQL metrics of the project's services' nodes, in the Prometheus text format (postgres_exporter's names)", ContentType: metricsContentType, Handler: s.projectMetrics},
		{Method: "GET", Pattern: "/v1/projects/{p}/ca", Access: ProjectRead, Summary: "Get the project CA certificate (PEM) clients verify servers with", Response: apitype.CA{}, Handler: s.getProjectCA},

		{Method: "GET", Pattern: "/v1/hosts/{host}/desired", Access: Agent, Summary: "Long-poll a host's desired state newer than ?after= (agents)", Response: apitype.HostDesired{}, Handler: s.hostDesired},
		{Method: "POST", Pattern: "/v1/hosts/{host}/report", Action: "host.report", Access: Agent, Summary: "Report what a host's agent applied (agents)", Request: apitype.HostReport{}, Status: 204, Handler: s.hostReport},
		{Method: "POST", Pattern: "/v1/hosts/{host}/stats", Action: "host.stats", Access: Agent, Summary: "Send the PostgreSQL statistics of a host's nodes, for the tenants' metrics (agents; kept in memory, not audited)", Request: apitype.HostStats{}, Status: 204, Handler: s.hostStats},

		{Method: "POST", Pattern: "/v1/hosts/{host}/ops/host-cert", Action: "ops.endpoint.register", Access: Agent, Summary: "Register a node's operator endpoint and sign its host key (agents)", Request: apitype.OpsHostCertRequest{}, Response: apitype.OpsHostCert{}, Handler: s.opsHostCert},
		{Method: "GET", Pattern: "/v1/hosts/{host}/ops/grants/{id}", Access: Agent, Summary: "Check that an operator grant is live for a node (?node=; agents)", Response: apitype.OpsGrantCheck{}, Handler: s.opsGrantLive},
		{Method: "POST", Pattern: "/v1/hosts/{host}/ops/events", Action: "ops.events", Access: Agent, Summary: "Send operator endpoints' audit events (agents)", Request: apitype.OpsEvents{}, Handler: s.opsEvents, Status: 204},
		{Method: "POST", Pattern: "/v1/hosts/{host}/ops/recordings", Action: "ops.recording.store", Access: Agent, Summary: "Store a terminal session's recording, sealed (agents)", Request: apitype.OpsRecordingUpload{}, Handler: s.opsRecording, Status: 204},

		{Method: "POST", Pattern: "/v1/ops/grants", Action: "ops.grant.create", Access: Operator, Summary: "Grant an operator SSH access to a node and sign the session key's certificate (operator)", Request: apitype.OpsGrantCreate{}, Response: apitype.OpsGrantIssued{}, Status: http.StatusCreated, Credential: true, Handler: s.createOpsGrant},
		{Method: "GET", Pattern: "/v1/ops/grants", Access: Operator, Summary: "List operator grants (operator; ?node= filters)", Response: apitype.List[apitype.OpsGrant]{}, Handler: s.listOpsGrants},
		{Method: "POST", Pattern: "/v1/ops/grants/{id}/revoke", Action: "ops.grant.revoke", Access: Operator, Summary: "Revoke an operator grant; its live sessions end (operator)", Response: apitype.OpsGrant{}, Handler: s.revokeOpsGrant},
		{Method: "GET", Pattern: "/v1/ops/sessions", Access: Operator, Summary: "List operator sessions (operator; ?node= filters)", Response: apitype.List[apitype.OpsSession]{}, Handler: s.listOpsSessions},
		{Method: "GET", Pattern: "/v1/ops/sessions/{id}/recordings/{n}", Access: Operator, Summary: "Get a session's terminal recording, asciicast v2 (operator)", Response: apitype.OpsRecording{}, Handler: s.getOpsRecording},

		{Method: "POST", Pattern: "/v1/projects/{p}/support-grants", Action: "support_grant.create", Access: ProjectAdmin, Summary: "Allow operators data access (moat ops psql) for a while", Request: apitype.SupportGrantCreate{}, Response: apitype.SupportGrant{}, Status: http.StatusCreated, Handler: s.createSupportGrant},
		{Method: "GET", Pattern: "/v1/projects/{p}/support-grants", Access: ProjectRead, Summary: "List support grants", Response: apitype.List[apitype.SupportGrant]{}, Handler: s.listSupportGrants},
		{Method: "POST", Pattern: "/v1/projects/{p}/support-grants/{id}/revoke", Action: "support_grant.revoke", Access: ProjectAdmin, Summary: "Revoke a support grant: operators' data access ends at once", Response: apitype.SupportGrant{}, Handler: s.revokeSupportGrant},

		{Method: "GET", Pattern: "/v1/projects/{p}/operations", Access: ProjectRead, Summary: "List operations", Response: apitype.List[apitype.Operation]{}, Handler: s.listOperations},
		{Method: "GET", Pattern: "/v1/projects/{p}/operations/{id}", Access: ProjectRead, Summary: "Get an operation", Response: apitype.Operation{}, Handler: s.getOperation},

		{Method: "POST", Pattern: "/v1/projects/{p}/support-requests", Action: "support.request.create", Access: ProjectWrite, Summary: "File a support request to the operator (a quota increase)", Request: apitype.SupportRequestCreate{}, Response: apitype.SupportRequest{}, Status: http.StatusCreated, Handler: s.createSupportRequest},
		{Method: "GET", Pattern: "/v1/projects/{p}/support-requests", Access: ProjectRead, Summary: "List the project's support requests", Response: apitype.List[apitype.SupportRequest]{}, Handler: s.listSupportRequests},
		{Method: "GET", Pattern: "/v1/projects/{p}/support-requests/{id}", Access: ProjectRead, Summary: "Get a support request", Response: apitype.SupportRequest{}, Handler: s.getSupportRequest},
		{Method: "GET", Pattern: "/v1/support-requests", Access: Operator, Summary: "List every project's support requests (operator; ?state=open selects the queue)", Response: apitype.List[apitype.SupportRequest]{}, Handler: s.listAllSupportRequests},
		{Method: "POST", Pattern: "/v1/support-requests/{id}/approve", Action: "support.request.approve", Access: Operator, Summary: "Approve a support request, raising the project's quota (operator)", Request: apitype.SupportDecision{}, Response: apitype.SupportRequest{}, Handler: s.approveSupportRequest},
		{Method: "POST", Pattern: "/v1/support-requests/{id}/decline", Action: "support.request.decline", Access: Operator, Summary: "Decline a support request with a reply (operator)", Request: apitype.SupportDecision{}, Response: apitype.SupportRequest{}, Handler: s.declineSupportRequest},

		{Method: "GET", Pattern: "/v1/projects/{p}/audit", Access: ProjectRead, Summary: "List the project's audit entries", Response: apitype.List[apitype.AuditEntry]{}, Handler: s.listProjectAudit},
		{Method: "POST", Pattern: "/v1/console/links", Action: "console.link.create", Access: Operator, Summary: "Mint a one-time console sign-in link for the caller's operator token (operator; valid 15 minutes, for one sign-in)", Response: apitype.ConsoleLink{}, Status: http.StatusCreated, Credential: true, Handler: s.createConsoleLink},

		{Method: "GET", Pattern: "/v1/audit", Access: Operator, Summary: "List all audit entries (operator)", Response: apitype.List[apitype.AuditEntry]{}, Handler: s.listAudit},
		{Method: "GET", Pattern: "/v1/audit/verify", Access: Operator, Summary: "Verify the audit hash chain and checkpoints (operator)", Response: apitype.AuditVerify{}, Handler: s.verifyAudit},
	}
}
