# The VPC-peering workflow: a Moat VPC, a peering connection to your own
# VPC (you accept it in your account), and a PostgreSQL service attached to
# the Moat VPC that only your VPC's range and your office may reach.
#
# The provider reads MOAT_URL, MOAT_TOKEN, MOAT_CA and MOAT_PROJECT, like
# the moat CLI: a shell that works with moat works with terraform.

terraform {
  required_providers {
    moat = {
      source = "moatdb/moat"
    }
  }
}

provider "moat" {}

variable "region" {
  description = "Region of the Moat VPC and the service."
  type        = string
  default     = "us-east-1"
}

variable "vpc_cidr" {
  description = "The Moat VPC's range (RFC 1918, /16 to /24); it must not overlap your VPC's."
  type        = string
  default     = "10.100.0.0/16"
}

variable "peer_account_id" {
  description = "Your cloud account ID (12 digits)."
  type        = string
}

variable "peer_vpc_id" {
  description = "Your VPC's ID (vpc-...)."
  type        = string
}

variable "peer_region" {
  description = "Your VPC's region."
  type        = string
  default     = "eu-west-1"
}

variable "peer_cidr" {
  description = "Your VPC's range: the clients that reach the service over the peering."
  type        = string
  default     = "172.31.0.0/16"
}

variable "office_cidr" {
  description = "Another range allowed to connect (your office, say)."
  type        = string
  default     = "203.0.113.0/24"
}

resource "moat_vpc" "main" {
  name   = "main"
  region = var.region
  cidr   = var.vpc_cidr
}

# Apply returns once the request waits for you: accept it in your account,
# then add a route to var.vpc_cidr through it and allow egress to port 5432.
resource "moat_peering_connection" "app" {
  vpc_id          = moat_vpc.main.id
  peer_account_id = var.peer_account_id
  peer_vpc_id     = var.peer_vpc_id
  peer_region     = var.peer_region
  peer_cidrs      = [var.peer_cidr]
}

resource "moat_service" "db" {
  name   = "db"
  region = var.region
  nodes  = 1

  # Changing vpc_id attaches, moves or detaches the service in place.
  vpc_id = moat_vpc.main.id

  allowed_ips = [
    { cidr = var.peer_cidr, description = "app VPC, over the peering" },
    { cidr = var.office_cidr, description = "office" },
  ]

  # Bump to reset the admin password in place.
  admin_password_version = 1

  timeouts {
    create = "15m"
    update = "15m"
  }
}

data "moat_project_ca" "ca" {}

output "accept_peering" {
  description = "The peering to accept in your account."
  value       = moat_peering_connection.app.cloud_peering_id
}

output "peering_state" {
  value = moat_peering_connection.app.state
}

output "conninfo" {
  description = "libpq connection string (save the CA as ca.pem first)."
  value       = "host=${moat_service.db.host} port=${moat_service.db.port} dbname=${moat_service.db.database} user=${moat_service.db.user} sslmode=verify-full sslrootcert=ca.pem"
}

output "project_ca" {
  value = data.moat_project_ca.ca.pem
}

output "admin_password" {
  value     = moat_service.db.admin_password
  sensitive = true
}
