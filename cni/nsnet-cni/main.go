// Command nsnet-cni is nsnet's CNI plugin (see package
// github.com/nsnet/nsnet/cni): install it in the runtime's plugin
// directory, and use "type": "nsnet-cni" in a network configuration.
package main

import "github.com/nsnet/nsnet/cni"

func main() { cni.Main() }
