//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "nsnet: network namespaces, and so this command, are Linux's")
	os.Exit(1)
}
