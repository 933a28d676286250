// Package firewall is how nsnet lives beside other firewalls on a host:
// it finds the forward chains of other tables that would drop what the
// library's table accepts (Look, View.Problem), follows changes to the
// ruleset (Monitor), and keeps a link's two accept rules in Docker's
// DOCKER-USER chain (nat.Config.DockerUser) in the shapes iptables-nft
// reads back.
package firewall
