package addr_test

import (
	"testing"

	"github.com/nsnet/nsnet/addr"
	"golang.org/x/sys/unix"
)

// TestConstantsMatchKernel: IFA_F_TENTATIVE, numbered by hand so that addr
// builds everywhere, is the kernel's.
func TestConstantsMatchKernel(t *testing.T) {
	if addr.IFAFTentative != unix.IFA_F_TENTATIVE {
		t.Errorf("ifaFTentative = %#x, kernel %#x", addr.IFAFTentative, unix.IFA_F_TENTATIVE)
	}
}
