// Command nsnet runs commands in network namespaces connected to the
// outside through NAT, and shows and cleans up what nsnet made on a host,
// for any program that uses the library (github.com/nsnet/nsnet):
//
//	nsnet run [-name N] [-p [IP:]HOST:NS[/tcp|udp]]... -- CMD [ARGS...]
//	nsnet ls [-json]
//	nsnet sweep
//	nsnet version
//
// Install it with
//
//	go install github.com/nsnet/nsnet/cmd/nsnet@latest
//
// run, ls and sweep act on the host network namespace of the calling
// process and need root there (CAP_NET_ADMIN, and CAP_SYS_ADMIN to make
// and enter namespaces), as ip does; "nsnet CMD -h" describes each. The
// exit status is 0, 1 for an error, 2 for a usage error, and for run the
// command's own (128+N when signal N ended it).
package main
